"""The policy workbench: what-if impact of candidate policies, and property tests of policy
files."""
