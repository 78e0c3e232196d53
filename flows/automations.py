"""Prefect automations of the service, applied with the deployments (README, "Run it as a service"):

    python -m flows.automations

- `vae-pipeline: crash unresponsive runs`: a flow run that stops sending heartbeats (its worker or
  machine died) is marked Crashed, instead of staying Running for ever and holding the retrain's
  one concurrency slot, which would cancel every later night's run.
- `vae-pipeline: notify on failure`: every Failed or Crashed flow run (the first automation's
  included) is posted to the webhook VAE_NOTIFY_WEBHOOK_URL names, kept in a Custom Webhook block
  as a secret. Without the variable there is no notification and the automation is removed.

Applying again updates both in place (by name), so it runs with every `prefect deploy`.
"""

from __future__ import annotations

import os
from datetime import timedelta

from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings

WEBHOOK_BLOCK = "vae-pipeline-failures"
CRASH_UNRESPONSIVE = "vae-pipeline: crash unresponsive runs"
NOTIFY_FAILURES = "vae-pipeline: notify on failure"
FLOW_RUNS = ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]})

NOTIFICATION_BODY = """Flow run {{ flow_run.name }} of {{ flow.name }} is {{ flow_run.state.name }}.
Deployment: {{ deployment.name if deployment else "none (started by hand)" }}
Message: {{ flow_run.state.message }}
{{ flow_run|ui_url }}"""


def _unresponsive_within() -> timedelta:
    # Three heartbeats missed: one late heartbeat from a busy machine is not a dead worker.
    return timedelta(seconds=3 * get_current_settings().flows.heartbeat_frequency)


def crash_unresponsive() -> Automation:
    # Prefect's recipe (docs: "Detect zombie flows"): after a heartbeat, expect another heartbeat
    # or a final state within the window, for each flow run; silence means its process is gone.
    return Automation(
        name=CRASH_UNRESPONSIVE,
        description="Marks a flow run Crashed when its heartbeats stop (dead worker or machine).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=FLOW_RUNS,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=_unresponsive_within(),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message="No heartbeat: the worker running this flow run stopped.")],
    )


def notify_failures(block_id) -> Automation:
    return Automation(
        name=NOTIFY_FAILURES,
        description="Posts every Failed or Crashed flow run to the team's webhook.",
        trigger=EventTrigger(expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}, match=FLOW_RUNS,
                             posture=Posture.Reactive, threshold=1, within=timedelta(0)),
        actions=[SendNotification(block_document_id=block_id, subject="vae-pipeline: {{ flow_run.name }} "
                                  "{{ flow_run.state.name }}", body=NOTIFICATION_BODY)],
    )


def _put(automation: Automation) -> Automation:
    """Create the automation, or replace the one of the same name."""
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
    if not existing:
        return automation.create()
    automation.id = existing[0].id
    automation.update()
    return automation


def _remove(name: str) -> None:
    with get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(name):
            client.delete_automation(automation.id)


def apply(webhook_url: str | None) -> list[str]:
    """Create or update the automations on the Prefect server of PREFECT_API_URL; returns their names."""
    applied = [_put(crash_unresponsive()).name]
    if not webhook_url:
        _remove(NOTIFY_FAILURES)
        return applied
    # The URL is a secret (a Slack or Teams webhook URL is its own credential): it is stored in
    # the block's `secrets`, which the API masks, and the URL field only refers to it.
    block = CustomWebhookNotificationBlock(
        name="vae-pipeline", url="{{webhook_url}}", secrets={"webhook_url": webhook_url},
        json_data={"text": "{{subject}}\n{{body}}"},
    )
    block_id = block.save(WEBHOOK_BLOCK, overwrite=True)
    applied.append(_put(notify_failures(block_id)).name)
    return applied


def main() -> None:
    for name in apply(os.environ.get("VAE_NOTIFY_WEBHOOK_URL")):
        print(f"applied automation {name!r}")
    if not os.environ.get("VAE_NOTIFY_WEBHOOK_URL"):
        print("VAE_NOTIFY_WEBHOOK_URL is unset: no notification of failed runs")


if __name__ == "__main__":
    main()
