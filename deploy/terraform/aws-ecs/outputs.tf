output "internal_url" {
  description = "The agent's base URL inside the VPC (apps use <internal_url>/v1)."
  value       = "http://${var.name}.${var.service_discovery_namespace}:8000"
}

output "service_name" {
  description = "The ECS service."
  value       = aws_ecs_service.this.name
}

output "security_group_id" {
  description = "The agent's security group (allow it in your providers' or proxies' rules)."
  value       = aws_security_group.this.id
}

output "task_role_arn" {
  description = "The agent tasks' IAM role (grant it access to other credential sources if needed)."
  value       = aws_iam_role.task.arn
}

output "org_token_secret_arn" {
  description = "The Secrets Manager secret the token is read from."
  value       = local.token_secret_arn
}
