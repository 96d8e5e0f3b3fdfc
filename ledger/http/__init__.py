"""The HTTP edge of the ledger (`ledger serve`): the same questions as the command line,
answered by the same query functions (`ledger.queries`), in the same JSON shapes.

Kept empty so that `ledger timeline` can import the renderer without the web framework.
"""
