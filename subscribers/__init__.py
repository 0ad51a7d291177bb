"""The audience: subscribers, their lifecycle, signed tokens, import/export and web routes.

A library over a SQLAlchemy session and a signer it is handed; it imports nothing from `digest`.
"""
