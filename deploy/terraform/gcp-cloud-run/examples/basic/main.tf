# terraform init && terraform apply (TF_VAR_bonito_org_token=bt-…)
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.20.0, < 8.0.0"
    }
  }
}

variable "project_id" {
  type = string
}

variable "vpc_connector_name" {
  type = string
}

variable "bonito_org_token" {
  type      = string
  sensitive = true
}

variable "gcp_secret_name" {
  type = string
}

# An Artifact Registry path (a remote repository of ghcr.io, or a copy of the image).
variable "agent_image" {
  type = string
}

provider "google" {
  project = var.project_id
}

module "bonito_gateway" {
  source            = "../.."
  project_id        = var.project_id
  region            = "us-central1"
  vpc_connector     = var.vpc_connector_name
  control_plane_url = "https://bonito.example.com"
  org_token         = var.bonito_org_token
  secret_name       = var.gcp_secret_name
  image             = var.agent_image
  min_instances     = 2
  max_instances     = 10
}

output "agent_endpoint" {
  value = module.bonito_gateway.internal_url
}
