# terraform init && terraform apply (TF_VAR_bonito_org_token=bt-…)
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 3.110.0, < 5.0.0"
    }
  }
}

provider "azurerm" {
  features {}
}

variable "resource_group_name" {
  type = string
}

variable "vnet_id" {
  type = string
}

variable "container_apps_subnet_id" {
  type = string
}

variable "key_vault_id" {
  type = string
}

variable "key_vault_url" {
  type = string
}

variable "bonito_org_token" {
  type      = string
  sensitive = true
}

module "bonito_gateway" {
  source            = "../.."
  resource_group    = var.resource_group_name
  vnet_id           = var.vnet_id
  subnet_id         = var.container_apps_subnet_id
  control_plane_url = "https://bonito.example.com"
  org_token         = var.bonito_org_token
  key_vault_id      = var.key_vault_id
  key_vault_url     = var.key_vault_url
  min_replicas      = 2
  max_replicas      = 5
}

output "agent_endpoint" {
  value = module.bonito_gateway.internal_url
}
