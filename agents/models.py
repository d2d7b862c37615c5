# VPC agents and their bt- org tokens arrive with the agent issue.
