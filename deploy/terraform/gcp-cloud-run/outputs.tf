output "internal_url" {
  description = "The agent's base URL, reachable from the VPC only (apps use <internal_url>/v1)."
  value       = google_cloud_run_v2_service.this.uri
}

output "service_account_email" {
  description = "The agent's identity (grant it more if another credential source needs it)."
  value       = google_service_account.this.email
}
