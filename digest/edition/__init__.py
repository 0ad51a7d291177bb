"""One weekly edition: weeks, selection, verdict summaries, the render (once per issue) and
composition into a frozen issue, personalisation slots, the operator preview."""
