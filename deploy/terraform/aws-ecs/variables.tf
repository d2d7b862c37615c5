variable "name" {
  description = "Name of the service, its log group, roles and DNS name (<name>.<namespace>)."
  type        = string
  default     = "bonito-agent"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name: 3-32 characters, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC the agent runs in."
  type        = string
  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the tasks (at least two, in different AZs, with a NAT or endpoints to reach the control plane and providers)."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 1 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "subnet_ids: one or more ids like subnet-0123456789abcdef0."
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
  description = "The org's bt- token. Stored in a Secrets Manager secret this module creates (so it is in the Terraform state: keep the state encrypted), injected by ECS from that secret, never as plain environment text. Leave null and set org_token_secret_arn to keep it out of the state."
  type        = string
  default     = null
  sensitive   = true
  validation {
    condition     = var.org_token == null || can(regex("^bt-[A-Za-z0-9_-]{16,}$", var.org_token))
    error_message = "org_token must be a bt- token (Settings → Deployment mode)."
  }
}

variable "org_token_secret_arn" {
  description = "ARN of an existing Secrets Manager secret whose value is the bt- token (instead of org_token)."
  type        = string
  default     = null
  validation {
    condition     = var.org_token_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.org_token_secret_arn))
    error_message = "org_token_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "secrets_manager_arn" {
  description = "ARN of the Secrets Manager secret holding the provider credentials JSON ({\"<provider>\": {\"<field>\": \"<value>\"}}); the task role may read it. Null: no AWS credential source."
  type        = string
  default     = null
  validation {
    condition     = var.secrets_manager_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.secrets_manager_arn))
    error_message = "secrets_manager_arn must be a Secrets Manager secret ARN."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the token secret and the log group (null: AWS-managed keys). The tasks' roles are allowed to decrypt with it."
  type        = string
  default     = null
}

variable "image" {
  description = "Agent image; pin a digest (…@sha256:…) in production."
  type        = string
  default     = "ghcr.io/bonito/gateway-agent:latest"
  validation {
    condition     = length(var.image) > 0
    error_message = "image must not be empty."
  }
}

variable "desired_count" {
  description = "Number of agent tasks."
  type        = number
  default     = 2
  validation {
    condition     = var.desired_count >= 1 && var.desired_count <= 100 && floor(var.desired_count) == var.desired_count
    error_message = "desired_count must be a whole number from 1 to 100."
  }
}

variable "cpu" {
  description = "Task CPU units (Fargate: 256, 512, 1024, 2048, 4096)."
  type        = number
  default     = 512
  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.cpu)
    error_message = "cpu must be one of Fargate's sizes: 256, 512, 1024, 2048, 4096."
  }
}

variable "memory" {
  description = "Task memory in MiB; must fit the cpu size (Fargate's table)."
  type        = number
  default     = 1024
  validation {
    condition     = var.memory >= 512 && var.memory <= 30720 && var.memory % 512 == 0
    error_message = "memory must be 512 to 30720 MiB, a multiple of 512 (and allowed for the chosen cpu)."
  }
}

variable "workers" {
  description = "uvicorn worker processes per task (BONITO_AGENT_WORKERS); at most one per vCPU."
  type        = number
  default     = 1
  validation {
    condition     = var.workers >= 1 && var.workers <= 16
    error_message = "workers must be 1 to 16."
  }
}

variable "cluster_arn" {
  description = "Existing ECS cluster to run in (null: the module creates one)."
  type        = string
  default     = null
}

variable "allowed_cidr_blocks" {
  description = "CIDRs allowed to call the agent on port 8000 (null: the VPC's CIDR)."
  type        = list(string)
  default     = null
  validation {
    condition     = var.allowed_cidr_blocks == null || alltrue([for c in coalesce(var.allowed_cidr_blocks, []) : can(cidrhost(c, 0))])
    error_message = "allowed_cidr_blocks must be CIDR blocks."
  }
}

variable "egress_cidr_blocks" {
  description = "Where the tasks may connect on 443: the control plane and the providers (and the image registry). Narrow it to a proxy or to endpoint ranges if you have them."
  type        = list(string)
  default     = ["0.0.0.0/0"]
  validation {
    condition     = alltrue([for c in var.egress_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "egress_cidr_blocks must be CIDR blocks."
  }
}

variable "service_discovery_namespace" {
  description = "Private DNS namespace created for the agent (internal_url is http://<name>.<namespace>:8000)."
  type        = string
  default     = "internal"
}

variable "log_retention_days" {
  description = "CloudWatch log retention."
  type        = number
  default     = 365
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of CloudWatch's retention values."
  }
}

variable "extra_environment" {
  description = "More non-secret agent settings (docs/deploy.md), e.g. { BONITO_SYNC_INTERVAL_S = \"30\" }."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : !can(regex("(TOKEN|SECRET|PASSWORD|REDIS_URL)", k))])
    error_message = "extra_environment is for non-secret settings; pass secrets through Secrets Manager."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
