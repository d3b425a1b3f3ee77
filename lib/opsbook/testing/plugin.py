"""opsbook's pytest plugin: real local services and a Kubernetes API, as session fixtures.

Registered through the ``pytest11`` entry point, so a runbook author who installs opsbook gets the
same fixtures we test with. Importing this module must stay cheap: no service starts and no heavy
library is imported until a test asks for a fixture.
"""

from opsbook.testing.kube import *  # noqa: F401,F403  (kube fixtures: owned by testing/kube.py)
from opsbook.testing.services import *  # noqa: F401,F403  (service fixtures: owned by testing/services/)
