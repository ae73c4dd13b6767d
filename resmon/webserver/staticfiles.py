"""
The dashboard's static files, served with the content types a browser
insists on whatever the host's MIME database says.
"""

from twisted.web import static

# A module script (<script type="module">) is refused unless served with a
# JavaScript type; twisted.web.static takes its types from the system's
# mime.types, which may map .js to something else or lack it.
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".html": "text/html",
}


class StaticFiles(static.File):
    """
    A L{static.File} whose content types for the dashboard's files are
    fixed; its subdirectories are served by the same class
    (L{static.File.createSimilarFile}), so they inherit them.
    """

    contentTypes = dict(static.File.contentTypes, **CONTENT_TYPES)
