"""The HTTP search service and its web page (``kbrelease serve``).

The app is built by :func:`kbrelease.service.app.create_app`; importing this
package alone loads nothing heavy.
"""
