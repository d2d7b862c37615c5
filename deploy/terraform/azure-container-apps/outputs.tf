output "internal_url" {
  description = "The agent's base URL inside the VNet (apps use <internal_url>/v1)."
  value       = "https://${azurerm_container_app.this.ingress[0].fqdn}"
}

output "identity_principal_id" {
  description = "The app's identity (grant it more if another credential source needs it)."
  value       = azurerm_user_assigned_identity.this.principal_id
}

output "environment_static_ip" {
  description = "The environment's internal load balancer address."
  value       = azurerm_container_app_environment.this.static_ip_address
}
