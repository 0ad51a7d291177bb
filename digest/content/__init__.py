"""Content in: comparison models, the page-text parser, the importer and the comparison store."""
