"""recsys.admin: the operator-facing contracts (rollouts), served on a separate loopback port."""
