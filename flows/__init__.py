"""Prefect flows over the pipeline's stages: wiring only, the work stays in `pipeline/`.

- `extract_and_train` (`extract-and-train`): videos -> features -> labels ->
  pseudo-labels -> train -> evaluate -> publish.
- `parse_folder` (`parse-folder`): new videos -> features -> a trained run's outputs.
- `runner`: `run_chain` (in-process, Prefect's embedded API) and `serve_deployments`.
"""

import os

# Prefect reads these when first imported. The embedded API creates its database on a
# fresh PREFECT_HOME in 9 s on an idle machine and in more than Prefect's 20-s limit on
# a loaded one; and nothing here sends usage analytics anywhere unless asked to.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
