# The Bonito VPC agent on Cloud Run: internal ingress only, egress through your VPC
# connector, the org token mounted from Secret Manager, its own least-privilege identity.

locals {
  create_token_secret = var.org_token_secret_id == null
  token_secret        = local.create_token_secret ? google_secret_manager_secret.token[0].id : var.org_token_secret_id
  # The credentials secret without a /versions/… suffix, for its IAM binding.
  credentials_secret = var.secret_name == null ? null : regex("^projects/[^/]+/secrets/[^/]+", var.secret_name)
  environment = merge(
    {
      BONITO_CONTROL_PLANE  = var.control_plane_url
      BONITO_ORG_TOKEN_FILE = "/var/run/secrets/bonito/token"
      BONITO_STATE_DIR      = "/var/lib/bonito-agent"
      # The state folder is the 256Mi in-memory volume below: the spool's bound (1 GiB by
      # default) must leave room in it for the config cache, the journal and dead letters.
      BONITO_SPOOL_MAX_BYTES = "134217728"
    },
    var.secret_name == null ? {} : { GCP_SECRET_NAME = var.secret_name },
    var.extra_environment,
  )
}

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = var.name
  display_name = "Bonito agent"
}

resource "google_secret_manager_secret" "token" {
  count     = local.create_token_secret ? 1 : 0
  project   = var.project_id
  secret_id = "${var.name}-org-token"
  labels    = var.labels
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "token" {
  count       = local.create_token_secret ? 1 : 0
  secret      = google_secret_manager_secret.token[0].id
  secret_data = var.org_token
}

resource "google_secret_manager_secret_iam_member" "token" {
  project   = var.project_id
  secret_id = local.token_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

resource "google_secret_manager_secret_iam_member" "credentials" {
  count     = local.credentials_secret == null ? 0 : 1
  project   = var.project_id
  secret_id = local.credentials_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

resource "google_cloud_run_v2_service" "this" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = false
  labels              = var.labels

  template {
    service_account                  = google_service_account.this.email
    max_instance_request_concurrency = 80
    timeout                          = "300s"
    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }
    vpc_access {
      connector = var.vpc_connector
      egress    = var.vpc_egress
    }
    volumes {
      name = "token"
      secret {
        secret = local.token_secret
        items {
          version = "latest"
          path    = "token"
        }
      }
    }
    volumes {
      name = "state"
      empty_dir {
        medium     = "MEMORY"
        size_limit = "256Mi"
      }
    }
    containers {
      image = var.image
      ports {
        container_port = 8000
      }
      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        # The agent syncs config, sends usage and heartbeats between requests: CPU always on.
        cpu_idle          = false
        startup_cpu_boost = true
      }
      dynamic "env" {
        for_each = local.environment
        content {
          name  = env.key
          value = env.value
        }
      }
      volume_mounts {
        name       = "token"
        mount_path = "/var/run/secrets/bonito"
      }
      volume_mounts {
        name       = "state"
        mount_path = "/var/lib/bonito-agent"
      }
      startup_probe {
        http_get {
          path = "/ready"
          port = 8000
        }
        period_seconds    = 2
        failure_threshold = 60
      }
      liveness_probe {
        http_get {
          path = "/health"
          port = 8000
        }
        period_seconds = 15
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.token, google_secret_manager_secret_version.token]

  lifecycle {
    precondition {
      condition     = (var.org_token == null) != (var.org_token_secret_id == null)
      error_message = "Set exactly one of org_token and org_token_secret_id."
    }
  }
}

resource "google_cloud_run_v2_service_iam_member" "public_internal" {
  #checkov:skip=CKV_GCP_102:Ingress is internal-only; the bn- key in Authorization authenticates each call (set allow_unauthenticated = false to require IAM too).
  count    = var.allow_unauthenticated ? 1 : 0
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = var.allow_unauthenticated ? toset([]) : toset(var.invoker_members)
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = each.value
}
