"""The web app and its routes: audience pages, webhooks, the operator preview."""
