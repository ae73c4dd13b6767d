"""
The options of users at the web role, for C{resmon.tap}: light, so
C{twistd resmon --help} loads nothing more.
"""

from twisted.python import usage

PARAMETERS = [
    ["users", None, None,
     "Web role: TOML file of the users who may log in to the dashboard and use the API "
     "(written by resmon-users; see docs/security.md). Without it, anyone who reaches the "
     "port sees and does everything. Re-read within a second when it changes. Webhooks "
     "role: the same file, so that a hook gets only the events of hosts its owner may see."],
    ["session-lifetime", None, "43200",
     "Web role, with --users: seconds a login session lasts (default 12 h)."],
]


def checkOptions(options, number):
    """
    Check the users options of C{options} (a L{resmon.tap.Options}), reading
    the users file now so that a bad one stops twistd with one line.
    """
    options["session-lifetime"] = number(options, "session-lifetime", float, 1, 365 * 86400)
    if options["users"] is not None:
        from resmon.auth.usersfile import UsersFileError, loadUsers
        try:
            loadUsers(options["users"])
        except UsersFileError as e:
            raise usage.UsageError(f"--users: {e}")
