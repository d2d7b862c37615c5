# The modules are deploy/terraform/{aws-ecs,azure-container-apps,gcp-cloud-run} in Bonito's
# repository. Pass the token through the environment, not a file:
#   export TF_VAR_bonito_org_token='{{ org_token }}'
variable "bonito_org_token" {
  type      = string
  sensitive = true
}

variable "vpc_id" {
  type = string
}

variable "private_subnet_ids" {
  type = list(string)
}

variable "credentials_secret_arn" {
  description = "The Secrets Manager secret holding the providers' credentials (JSON)."
  type        = string
}

# AWS ECS/Fargate (see deploy/terraform/*/examples for Azure Container Apps and GCP Cloud Run)
module "bonito_gateway" {
  source              = "./bonito/deploy/terraform/aws-ecs"
  vpc_id              = var.vpc_id
  subnet_ids          = var.private_subnet_ids
  control_plane_url   = "{{ control_plane_url }}"
  org_token           = var.bonito_org_token
  desired_count       = 2
  cpu                 = 512
  memory              = 1024
  secrets_manager_arn = var.credentials_secret_arn
}

output "agent_endpoint" {
  value = module.bonito_gateway.internal_url
}
