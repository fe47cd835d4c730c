"""When :func:`~boundary_unlearning.training.fit` stops before its step budget runs out, and
what each run did.

A stopping rule is any object with the hooks of :class:`StoppingRule` (``start``,
``before_step``, ``after_step``, ``check``, ``finish``, ``close``); ``fit`` calls them and
knows nothing else about the rule, so a new criterion is a new class (a module of this
package), not an edit of the loop. :class:`ForgetTarget` is the rule of the forget-only
methods: stop as soon as at most ``target`` of the forget set is still predicted as its own
class. :class:`AllOf` stops when every one of several rules would (an additional criterion
on top of the forget target); :class:`NotBefore` gives a rule a minimum number of steps;
:class:`Settled` stops once a value the loss records each step has come down to a threshold
(the feature stage's remaining way).

:class:`FitResult` is what one ``fit`` did (steps, and the rule's target, verdict and
trace); :func:`collect_fits` gathers the results of every ``fit`` inside a block.
"""

from .forget import ForgetTarget
from .rule import (
    AllOf,
    FitResult,
    FitRun,
    NeverStop,
    NotBefore,
    StoppingRule,
    collect_fits,
    record_fit,
)
from .settled import Settled

__all__ = [
    "AllOf",
    "FitResult",
    "FitRun",
    "ForgetTarget",
    "NeverStop",
    "NotBefore",
    "Settled",
    "StoppingRule",
    "collect_fits",
    "record_fit",
]
