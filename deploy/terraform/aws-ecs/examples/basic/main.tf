# terraform init && terraform apply -var 'bonito_org_token=bt-…' (or TF_VAR_bonito_org_token)
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0, < 7.0.0"
    }
  }
}

provider "aws" {
  region = "us-east-1"
}

variable "vpc_id" {
  type = string
}

variable "private_subnet_ids" {
  type = list(string)
}

variable "bonito_org_token" {
  type      = string
  sensitive = true
}

variable "credentials_secret_arn" {
  type = string
}

module "bonito_gateway" {
  source              = "../.."
  vpc_id              = var.vpc_id
  subnet_ids          = var.private_subnet_ids
  control_plane_url   = "https://bonito.example.com"
  org_token           = var.bonito_org_token
  desired_count       = 2
  cpu                 = 512
  memory              = 1024
  secrets_manager_arn = var.credentials_secret_arn

  tags = {
    Environment = "production"
    ManagedBy   = "bonito"
  }
}

output "agent_endpoint" {
  value = module.bonito_gateway.internal_url
  # e.g., http://bonito-agent.internal:8000
}
