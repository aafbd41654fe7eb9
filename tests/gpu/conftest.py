"""The ``gpu`` Hypothesis profile for tests/gpu: ``pytest tests/gpu --hypothesis-profile gpu``.

Shrinking is off.  On a GPU each smaller shape compiles anew, so a shrink can outlast a device
call's time limit and leave no report.  Without it, the first failing case is reported whole at
once, and the tests' derandomized examples stay the same.  Registered
here, at start-up, because the tests' own ``settings`` take their unset values (``phases``) from
the profile loaded when their module is imported.
"""

from hypothesis import Phase, settings

settings.register_profile(
    "gpu", phases=(Phase.explicit, Phase.reuse, Phase.generate), deadline=None, print_blob=True
)
