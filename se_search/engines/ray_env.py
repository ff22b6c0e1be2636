"""Ray's environment for se-search, set before Ray is first imported: a local instance
without an auth token, no per-trial result files of Tune's (se-search records every trial
itself) and no experiment banner. A variable already set by the user wins."""

import os

for _name, _value in {
    "RAY_AUTH_MODE": "disabled",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
}.items():
    os.environ.setdefault(_name, _value)
