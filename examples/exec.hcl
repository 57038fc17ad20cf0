# A pool whose tokens a local command mints. tokend runs the command without
# a shell and reads one JSON object from its stdout:
#
#   {"token": "...", "expires_in": 3600, "metadata": {"key_id": "k1"}}
#
# Apply it with: tokend pool apply examples/exec.hcl

name        = "deploy"
selection   = "round_robin"
min_healthy = 1
size        = 3
labels = {
  team = "platform"
  env  = "prod"
}

provider {
  type = "exec"
  # The program and its arguments, as a list.
  command = ["/usr/local/bin/mint-token", "--audience", "deploy"]
  # Revokes the token it reads on stdin once a replaced token's grace ends.
  revoke_command = ["/usr/local/bin/mint-token", "--revoke"]
  # The only variables of the agent's environment the commands see.
  env     = ["VAULT_ADDR", "VAULT_TOKEN"]
  timeout = "20s"
}

rotation {
  max_age      = "12h"
  renew_before = "30m"
  grace        = "2m"
  min_active   = 2
  retry_min    = "5s"
  retry_max    = "10m"
  alert_before = "15m"
}

# How reports from the pool's users become token health.
health {
  window            = 20
  degraded_failures = 5
  degraded_ratio    = 0.5
  outcome_ttl       = "5m"
  default_cooldown  = "1m"
  report_quorum     = 2
  report_window     = "5m"
}
