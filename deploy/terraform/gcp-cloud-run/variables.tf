variable "name" {
  description = "Name of the Cloud Run service, its service account and the token secret."
  type        = string
  default     = "bonito-agent"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,26}[a-z0-9]$", var.name))
    error_message = "name: 3-28 characters, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "project_id" {
  description = "GCP project."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project id."
  }
}

variable "region" {
  description = "Cloud Run region, e.g. us-central1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must look like us-central1."
  }
}

variable "vpc_connector" {
  description = "Serverless VPC Access connector (name or projects/…/locations/…/connectors/… id) the agent's egress goes through."
  type        = string
  validation {
    condition     = length(var.vpc_connector) > 0
    error_message = "vpc_connector must not be empty."
  }
}

variable "vpc_egress" {
  description = "ALL_TRAFFIC (every outbound connection through the VPC: your firewall and NAT apply) or PRIVATE_RANGES_ONLY."
  type        = string
  default     = "ALL_TRAFFIC"
  validation {
    condition     = contains(["ALL_TRAFFIC", "PRIVATE_RANGES_ONLY"], var.vpc_egress)
    error_message = "vpc_egress must be ALL_TRAFFIC or PRIVATE_RANGES_ONLY."
  }
}

variable "control_plane_url" {
  description = "Your Bonito control plane's URL (the dashboard's, https://…). Required: there is no default to send the org token to."
  type        = string
  validation {
    condition     = can(regex("^https://[^\\s/]+(/.*)?$", var.control_plane_url)) && !can(regex("/(v1|api|api/agent)/?$", var.control_plane_url))
    error_message = "control_plane_url must be the control plane's https:// URL (the dashboard's), not the SDKs' .../v1 or .../api: the agent refuses those at start."
  }
}

variable "org_token" {
  description = "The org's bt- token: stored in a Secret Manager secret this module creates (so it is in the Terraform state: keep the state encrypted) and mounted from it, never plain environment text. Null: set org_token_secret_id."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.org_token == null || can(regex("^bt-[A-Za-z0-9_-]{16,}$", var.org_token))
    error_message = "org_token must be a bt- token (Settings → Deployment mode)."
  }
}

variable "org_token_secret_id" {
  description = "An existing Secret Manager secret (projects/<p>/secrets/<name>) holding the bt- token, instead of org_token."
  type        = string
  default     = null
  validation {
    condition     = var.org_token_secret_id == null || can(regex("^projects/[^/]+/secrets/[^/]+$", var.org_token_secret_id))
    error_message = "org_token_secret_id must look like projects/<project>/secrets/<name>."
  }
}

variable "secret_name" {
  description = "Secret Manager secret with the provider credentials JSON (GCP_SECRET_NAME), projects/<p>/secrets/<name>[/versions/<v>]; the agent's service account may read it. Null: none."
  type        = string
  default     = null
  validation {
    condition     = var.secret_name == null || can(regex("^projects/[^/]+/secrets/[^/]+(/versions/[^/]+)?$", var.secret_name))
    error_message = "secret_name must look like projects/<project>/secrets/<name>."
  }
}

variable "image" {
  description = "Agent image. Cloud Run pulls only from Artifact Registry or Docker Hub: point an Artifact Registry remote repository at ghcr.io (or copy the image) and give its path, e.g. us-central1-docker.pkg.dev/<project>/ghcr/bonito/gateway-agent@sha256:…"
  type        = string
  default     = "ghcr.io/bonito/gateway-agent:latest"
}

variable "min_instances" {
  description = "Fewest instances (at least 1: the agent syncs config and reports usage in the background)."
  type        = number
  default     = 2
  validation {
    condition     = var.min_instances >= 1 && var.min_instances <= 100
    error_message = "min_instances must be 1 to 100."
  }
}

variable "max_instances" {
  description = "Most instances."
  type        = number
  default     = 10
  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000
    error_message = "max_instances must be 1 to 1000."
  }
}

variable "cpu" {
  description = "vCPU per instance (\"1\", \"2\", \"4\")."
  type        = string
  default     = "1"
  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.cpu)
    error_message = "cpu must be 1, 2, 4, 6 or 8."
  }
}

variable "memory" {
  description = "Memory per instance, e.g. 1Gi."
  type        = string
  default     = "1Gi"
  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.memory))
    error_message = "memory must look like 512Mi or 1Gi."
  }
}

variable "allow_unauthenticated" {
  description = "Let callers in the VPC reach the service without a Google identity token: apps authenticate with their bn- key, and ingress is internal-only. false: grant roles/run.invoker to invoker_members instead (callers then send X-Serverless-Authorization)."
  type        = bool
  default     = true
}

variable "invoker_members" {
  description = "Members given roles/run.invoker when allow_unauthenticated is false, e.g. serviceAccount:app@p.iam.gserviceaccount.com."
  type        = list(string)
  default     = []
}

variable "extra_environment" {
  description = "More non-secret agent settings (docs/deploy.md)."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : !can(regex("(TOKEN|SECRET|PASSWORD|REDIS_URL)", k))])
    error_message = "extra_environment is for non-secret settings; pass secrets through Secret Manager."
  }
}

variable "labels" {
  description = "Labels for every resource."
  type        = map(string)
  default     = {}
}
