"""Settings for the whole suite.

Hypothesis's default 200 ms deadline turns a busy, shared machine into failures ("took
495 ms"); no test here may depend on wall-clock speed, so examples have no deadline.
"""

from hypothesis import settings

settings.register_profile("grantbox", deadline=None)
settings.load_profile("grantbox")
