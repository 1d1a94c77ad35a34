"""The Prefect adapter of the chain (`avvp.pipeline.chain`, the only room it imports):
no stage is known here, only nodes, plans and units.

- `tasks`: each node's plan and units as Prefect tasks (`PrefectExecutor`): cache keys
  from the plans, transient-only retries, GPU slots, progress lines and artifacts.
- `chain_flow`: a chain as a flow's body: artifacts, and a Failed final state when
  inputs failed.
- `extract_and_train` (`extract-and-train`) and `parse_folder` (`parse-folder`): the
  flows, with the chains' parameters as theirs.
- `runner`: the flows in this process (Prefect's embedded API) and `serve_deployments`.
"""

import os

# Prefect reads these when first imported. The embedded API creates its database on a
# fresh PREFECT_HOME in 9 s on an idle machine and in more than Prefect's 20-s limit on
# a loaded one; and nothing here sends usage analytics anywhere unless asked to.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
