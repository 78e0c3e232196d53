"""Step 4: register the gated model as the challenger, and promote it to champion only when it
beats the current champion on the same held-out data by `register.min_improvement`.

Both models are scored here by one function on the current snapshot's held-out rows that neither
trained on: the challenger from its checkpoint, the champion from the full VAE weights its logged
model carries (`weights_uri` tag), its training rows known from the row hashes logged beside them
(`train_rows_uri` tag). The champion is re-scored on every decision rather than trusted from its
tag, because its tag was measured on the data of its own day; and its own training rows are left
out, because a model scored on rows it learned wins for the wrong reason."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows import comparison, tracking
from flows.config import PipelineConfig
from flows.lazy_task import task
from flows.prefect_report import artifact
from flows.promotion_lock import promotion_lock
from flows.retry import network
from vae_model.data import ImageData, read_snapshot, row_hashes
from vae_model.likelihood import unscorable
from vae_model.weights import load_model


def decide(challenger: float | None, incumbent: float | None, min_improvement: float, why_not: str | None = None) -> tuple[bool, str]:
    """Promote when there is no champion, or the challenger's held-out ELBO is higher by more than
    min_improvement; a champion that cannot be scored on this data, or on no row it did not train
    on, is kept (a person decides)."""
    if why_not is not None:
        return False, f"kept the champion: it cannot be scored on this data ({why_not})"
    if incumbent is None:
        return True, "promoted: there was no champion"
    gain = challenger - incumbent
    verdict = "promoted" if gain > min_improvement else "kept the champion"
    return gain > min_improvement, f"{verdict}: held-out ELBO gain {gain:+.4f} nats per example, needed more than {min_improvement:g}"


def _current_champion(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _markdown(name: str, version: str, old: str | None, scores: dict[str, float | None], rows: dict[str, int],
              promoted: bool, reason: str) -> str:
    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return (
        f"# Champion/challenger: {'promoted' if promoted else 'champion kept'}\n\n"
        f"| model | version | held-out ELBO (nats per example) |\n|---|---|---|\n"
        f"| challenger | {name} v{version} | {cell(scores['challenger'])} |\n"
        f"| champion before | {f'{name} v{old}' if old else 'none'} | {cell(scores['champion'])} |\n\n"
        f"Compared on {rows['compared']} of the snapshot's {rows['held_out']} held-out rows; "
        f"{rows['champion_trained_on']} were left out as rows the champion trained on.\n\n"
        f"{reason}\n"
    )


def _score_both(cfg: PipelineConfig, trained: dict[str, Any], val: ImageData, own_rows, incumbent):
    """Score the challenger, and the champion if it can be, on the held-out rows neither trained on.
    Returns the scores, the row counts and why the champion could not be scored (or None)."""
    val_rows = row_hashes(val)
    compare = comparison.unseen(val_rows, own_rows)
    rows = {"held_out": len(val), "champion_trained_on": 0}
    old, why_not = None, None
    if incumbent is not None:
        if "weights_uri" not in incumbent.tags:
            why_not = "its version has no weights_uri tag"
        else:
            old = comparison.load_weights(incumbent.tags["weights_uri"])
            why_not = unscorable(old, val)
        if why_not is None:
            seen = comparison.training_rows(incumbent.tags, cfg.data.snapshot_dir)
            if seen is None:
                why_not = "its training rows are unknown (no train_rows_uri tag, and its snapshot is not in data.snapshot_dir)"
            else:
                fresh = compare & comparison.unseen(val_rows, seen)
                rows["champion_trained_on"] = int(compare.sum() - fresh.sum())
                compare = fresh
                if not compare.any():
                    why_not = "every held-out row of this snapshot is one it trained on, so there is nothing fair to compare on"
    rows["compared"] = int(compare.sum())
    subset = val.subset(compare)
    scores: dict[str, float | None] = {"challenger": None, "champion": None}
    if rows["compared"]:
        scores["challenger"] = comparison.score(load_model(trained["checkpoint"]), subset, cfg)
        if incumbent is not None and why_not is None:
            scores["champion"] = comparison.score(old, subset, cfg)
    return scores, rows, why_not


def _registered(client: MlflowClient, name: str, model_id: str, run_id: str):
    """The version an earlier attempt of this step registered for this logged model, or None."""
    for version in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        if version.model_id == model_id or version.source == f"models:/{model_id}":
            return version
    return None


def _float(tag: str) -> float | None:
    return None if tag == "n/a" else float(tag)


def _compare(incumbent, trained: dict[str, Any], data: dict[str, Any], val: ImageData, own_rows,
             cfg: PipelineConfig) -> dict[str, str]:
    """Score both models on the held-out rows neither trained on: the decision as tags."""
    scores, rows, why_not = _score_both(cfg, trained, val, own_rows, incumbent)
    promoted, reason = decide(scores["challenger"], scores["champion"], cfg.register_.min_improvement, why_not)
    return {
        "champion_decision": "promoted" if promoted else "kept",
        "champion_decision_reason": reason,
        "challenger_heldout_elbo": repr(scores["challenger"]) if scores["challenger"] is not None else "n/a",
        "champion_heldout_elbo": repr(scores["champion"]) if scores["champion"] is not None else "n/a",
        "compared_with_version": "none" if incumbent is None else str(incumbent.version),
        "compared_on_data_sha256": data["sha256"],
        "compared_on_rows": str(rows["compared"]),
        "heldout_rows": str(rows["held_out"]),
        "excluded_champion_training_rows": str(rows["champion_trained_on"]),
        "min_improvement": repr(cfg.register_.min_improvement),
    }


def _outcome(tags: dict[str, str], version: str, incumbent) -> tuple[bool, str]:
    """Promote as the decision says, unless (on a retry) another version became champion since."""
    if incumbent is not None and str(incumbent.version) not in (tags["compared_with_version"], version):
        return False, f"kept: v{incumbent.version} became champion meanwhile"
    return tags["champion_decision"] == "promoted", tags["champion_decision_reason"]


@task(name="register", **network(timeout_s=600))
def register(cfg: PipelineConfig, data: dict[str, Any], trained: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Register the gated model as challenger; promote it to champion if it beats the champion.
    Safe to retry: the version a failed attempt registered is found and finished, never duplicated."""
    tracking.use(cfg.tracking.uri)
    name, champ_alias, chall_alias = cfg.register_.model_name, cfg.register_.alias, cfg.register_.challenger_alias
    client = MlflowClient()
    model_id = trained["model_id"]
    run_id = mlflow.get_logged_model(model_id).source_run_id
    train_data, val_data = read_snapshot(data["snapshot"])
    own_rows = row_hashes(train_data)
    with promotion_lock(mlflow.get_registry_uri(), name):
        existing = _registered(client, name, model_id, run_id)
        incumbent = _current_champion(client, name, champ_alias)
        if existing is not None and "champion_decision" in existing.tags:
            version, tags = str(existing.version), existing.tags
        else:
            # Every read that can fail (the checkpoint, the champion's weights in the artifact store)
            # comes before the version exists, and the version is created with its decision in
            # one call: a failed attempt leaves nothing half-registered behind.
            tags = {
                "heldout_elbo": repr(report["heldout_elbo"]),
                "data_sha256": data["sha256"],
                "config_sha256": cfg.sha256(),
                "validation_status": "passed",
                "weights_uri": comparison.weights_uri(model_id),
                "train_rows_uri": comparison.log_training_rows(own_rows, run_id),
                **({"git_commit": commit} if (commit := tracking.git_commit()) else {}),
                **_compare(incumbent, trained, data, val_data, own_rows, cfg),
            }
            if existing is None:
                version = str(mlflow.register_model(f"models:/{model_id}", name, tags=tags).version)
            else:  # registered by an attempt from before the decision was written with the version
                version = str(existing.version)
                for key, value in tags.items():
                    client.set_model_version_tag(name, version, key, value)
        promoted, reason = _outcome(tags, version, incumbent)
        client.set_registered_model_alias(name, chall_alias, version)
        if promoted:
            client.set_registered_model_alias(name, champ_alias, version)
    old_version = None if tags["compared_with_version"] == "none" else tags["compared_with_version"]
    scores = {"challenger": _float(tags["challenger_heldout_elbo"]), "champion": _float(tags["champion_heldout_elbo"])}
    rows = {"compared": int(tags["compared_on_rows"]), "held_out": int(tags["heldout_rows"]),
            "champion_trained_on": int(tags["excluded_champion_training_rows"])}
    artifact(_markdown(name, version, old_version, scores, rows, promoted, reason),
                             key="champion-challenger", description="champion/challenger decision")
    alias = champ_alias if promoted else chall_alias
    return {"name": name, "version": version, "alias": alias, "uri": f"models:/{name}@{alias}",
            "promoted": promoted, "champion_version": version if promoted else incumbent and str(incumbent.version),
            "champion_uri": f"models:/{name}@{champ_alias}", "decision": reason}
