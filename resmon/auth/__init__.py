"""
Users and trust at the web role: who a request speaks for (L{principal}),
the users file, password and token hashing, sessions and login.
"""
