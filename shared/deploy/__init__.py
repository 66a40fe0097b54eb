"""Deploys: the services file, deploy records and the ``deploy`` task type (listed in shared.task_types)."""

from shared.deploy.models import DEPLOY, DEPLOY_STEP, DeployPayload, DeployStatus, StepPayload

__all__ = ["DEPLOY", "DEPLOY_STEP", "DeployPayload", "DeployStatus", "StepPayload"]
