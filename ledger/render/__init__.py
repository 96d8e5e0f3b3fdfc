"""What both edges show people: text made safe for a terminal or a page, and the timeline
picture. Below the CLI and the HTTP API, so neither imports the other for it."""
