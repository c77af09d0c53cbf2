"""The dashboard's parts: Jinja2 templates and a stylesheet (in this directory), and the pure
helpers its routes (``server/routes/ui.py``) use to format values, lay out the inline SVG
charts, and check sessions and CSRF tokens.
"""
