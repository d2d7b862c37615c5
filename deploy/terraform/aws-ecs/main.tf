# The Bonito VPC agent on ECS Fargate: private tasks behind a Cloud Map name, the org token
# injected from Secrets Manager, outbound HTTPS only.

data "aws_region" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  create_token_secret = var.org_token_secret_arn == null
  token_secret_arn    = local.create_token_secret ? aws_secretsmanager_secret.token[0].arn : var.org_token_secret_arn
  cluster_arn         = var.cluster_arn != null ? var.cluster_arn : aws_ecs_cluster.this[0].arn
  allowed_cidrs       = var.allowed_cidr_blocks != null ? var.allowed_cidr_blocks : [data.aws_vpc.this.cidr_block]
  secret_arns         = compact([local.token_secret_arn, var.secrets_manager_arn])
  environment = merge(
    {
      BONITO_CONTROL_PLANE = var.control_plane_url
      BONITO_AGENT_PORT    = "8000"
      BONITO_AGENT_WORKERS = tostring(var.workers)
      BONITO_STATE_DIR     = "/var/lib/bonito-agent"
      AWS_DEFAULT_REGION   = data.aws_region.current.name
    },
    var.secrets_manager_arn == null ? {} : { AWS_SECRETS_MANAGER_ARN = var.secrets_manager_arn },
    var.extra_environment,
  )
}

# The token, when given as a value: into Secrets Manager, read by ECS at task start.
resource "aws_secretsmanager_secret" "token" {
  #checkov:skip=CKV2_AWS_57:The bt- token is rotated from the Bonito dashboard (the agent receives the new one), not by a Lambda.
  count                   = local.create_token_secret ? 1 : 0
  name_prefix             = "${var.name}-org-token-"
  description             = "Bonito org token (bt-) for ${var.name}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "token" {
  count         = local.create_token_secret ? 1 : 0
  secret_id     = aws_secretsmanager_secret.token[0].id
  secret_string = var.org_token
}

resource "aws_ecs_cluster" "this" {
  count = var.cluster_arn == null ? 1 : 0
  name  = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = var.tags
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "assume_ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Execution role: pull the image, write logs, read the token secret (nothing else).
resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }
  statement {
    sid       = "OrgToken"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.token_secret_arn]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptToken"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "bonito-agent-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role_policy_attachment" "execution_ecr" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# Task role: what the agent itself may do: read the provider credentials secret.
resource "aws_iam_role" "task" {
  name_prefix        = "${var.name}-task-"
  assume_role_policy = data.aws_iam_policy_document.assume_ecs_tasks.json
  tags               = var.tags
}

data "aws_iam_policy_document" "task" {
  count = var.secrets_manager_arn == null ? 0 : 1
  statement {
    sid       = "ProviderCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.secrets_manager_arn]
  }
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptCredentials"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  count  = var.secrets_manager_arn == null ? 0 : 1
  name   = "bonito-agent-credentials"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task[0].json
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-"
  description = "Bonito agent: /v1 from the allowed CIDRs, HTTPS out"
  vpc_id      = var.vpc_id
  tags        = var.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "v1" {
  for_each          = toset(local.allowed_cidrs)
  security_group_id = aws_security_group.this.id
  description       = "Apps calling the agent's /v1"
  ip_protocol       = "tcp"
  from_port         = 8000
  to_port           = 8000
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "https" {
  #checkov:skip=CKV_AWS_382:Providers' and the control plane's addresses are not fixed; egress is HTTPS only and narrowed by egress_cidr_blocks.
  for_each          = toset(var.egress_cidr_blocks)
  security_group_id = aws_security_group.this.id
  description       = "HTTPS to the control plane, the providers and the image registry"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "dns" {
  security_group_id = aws_security_group.this.id
  description       = "DNS (the VPC resolver)"
  ip_protocol       = "udp"
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = var.service_discovery_namespace
  description = "Bonito agent"
  vpc         = var.vpc_id
  tags        = var.tags
}

resource "aws_service_discovery_service" "this" {
  name = var.name
  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this.id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {
    failure_threshold = 1
  }
  tags = var.tags
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "state"
  }
  volume {
    name = "tmp"
  }
  container_definitions = jsonencode([{
    name                   = "agent"
    image                  = var.image
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    portMappings           = [{ containerPort = 8000, protocol = "tcp" }]
    environment            = [for k, v in local.environment : { name = k, value = v }]
    secrets                = [{ name = "BONITO_ORG_TOKEN", valueFrom = local.token_secret_arn }]
    mountPoints = [
      { sourceVolume = "state", containerPath = "/var/lib/bonito-agent", readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
    healthCheck = {
      command     = ["CMD", "python", "/usr/local/bin/healthcheck.py", "/ready"]
      interval    = 15
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    stopTimeout = 60
    linuxParameters = {
      initProcessEnabled = true
      capabilities       = { drop = ["ALL"] }
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "agent"
      }
    }
  }])
  tags = var.tags
  lifecycle {
    precondition {
      condition     = (var.org_token == null) != (var.org_token_secret_arn == null)
      error_message = "Set exactly one of org_token and org_token_secret_arn."
    }
  }
}

resource "aws_ecs_service" "this" {
  name                               = var.name
  cluster                            = local.cluster_arn
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  enable_execute_command             = false
  propagate_tags                     = "SERVICE"
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.this.id]
    assign_public_ip = false
  }
  service_registries {
    registry_arn = aws_service_discovery_service.this.arn
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  tags = var.tags
}
