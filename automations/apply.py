"""Apply the automations in this folder to the Prefect server at PREFECT_API_URL.

The YAML files are what `prefect automation create --from-file FILE` reads, except that their
notification action names its block by a placeholder, `BLOCK_DOCUMENT_ID` (a block's id exists only
once the block is saved on a server). This script fills in the id of the block you name and creates
each automation, or updates the one of the same name (so it can be re-run).

    python automations/apply.py --block custom-webhook/aimoves-alerts       # an existing block
    python automations/apply.py --webhook-url https://example.com/hook      # save custom-webhook/aimoves-alerts first
    python automations/apply.py --slack-url https://hooks.slack.com/services/…   # save slack-webhook/aimoves-alerts first
    python automations/apply.py --block custom-webhook/aimoves-alerts --render-to /tmp/auto   # only write filled files
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

HERE = Path(__file__).resolve().parent
PLACEHOLDER = "BLOCK_DOCUMENT_ID"
DEFAULT_BLOCK = "custom-webhook/aimoves-alerts"


def automation_files(folder: Path = HERE) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))


def render(path: Path, block_document_id: UUID | str) -> dict[str, Any]:
    """The automation in `path` with its notification block filled in."""
    data = yaml.safe_load(path.read_text())
    for action in data.get("actions", []):
        if action.get("block_document_id") == PLACEHOLDER:
            action["block_document_id"] = str(block_document_id)
    return data


def save_webhook_block(url: str, name: str = "aimoves-alerts") -> tuple[str, UUID]:
    """A Custom Webhook block POSTing {"subject", "body"} as JSON to `url`."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(name=name, url=url, method="POST",
                                           json_data={"subject": "{{subject}}", "body": "{{body}}"})
    return f"custom-webhook/{name}", block.save(name, overwrite=True)


def save_slack_block(url: str, name: str = "aimoves-alerts") -> tuple[str, UUID]:
    from prefect.blocks.notifications import SlackWebhook

    return f"slack-webhook/{name}", SlackWebhook(url=url).save(name, overwrite=True)


async def block_id(ref: str) -> UUID:
    """`<block type slug>/<block name>` → the saved block's document id."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    type_slug, _, name = ref.partition("/")
    if not name:
        raise SystemExit(f"--block {ref!r}: use <block type slug>/<block name>, e.g. {DEFAULT_BLOCK}")
    async with get_client() as client:
        try:
            doc = await client.read_block_document_by_name(name=name, block_type_slug=type_slug)
        except ObjectNotFound:
            raise SystemExit(f"no block {ref} on {client.api_url}: create it first (see README, 'Running it every day')") from None
    return doc.id


async def apply(automations: list[dict[str, Any]]) -> list[tuple[str, UUID, str]]:
    """Create each automation, or update the one with its name; (name, id, 'created'|'updated')."""
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    done = []
    async with get_client() as client:
        for data in automations:
            automation = AutomationCore.model_validate(data)
            existing = await client.read_automations_by_name(automation.name)
            if existing:
                await client.update_automation(existing[0].id, automation)
                for extra in existing[1:]:  # keep exactly one of each name
                    await client.delete_automation(extra.id)
                done.append((automation.name, existing[0].id, "updated"))
            else:
                done.append((automation.name, await client.create_automation(automation), "created"))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--block", default=None, help=f"existing notification block, <type slug>/<name> (default {DEFAULT_BLOCK})")
    group.add_argument("--webhook-url", help="save a Custom Webhook block custom-webhook/aimoves-alerts for this URL, then use it")
    group.add_argument("--slack-url", help="save a Slack Webhook block slack-webhook/aimoves-alerts for this URL, then use it")
    parser.add_argument("--render-to", type=Path, help="write the filled-in files here (for `prefect automation create --from-file`) instead of applying")
    parser.add_argument("files", nargs="*", type=Path, help="automation files (default: every .yaml in automations/)")
    args = parser.parse_args(argv)

    if args.webhook_url:
        ref, bid = save_webhook_block(args.webhook_url)
        print(f"saved block {ref} ({bid})")
    elif args.slack_url:
        ref, bid = save_slack_block(args.slack_url)
        print(f"saved block {ref} ({bid})")
    else:
        ref = args.block or DEFAULT_BLOCK
        bid = asyncio.run(block_id(ref))
    files = args.files or automation_files()
    rendered = [render(f, bid) for f in files]
    if args.render_to:
        args.render_to.mkdir(parents=True, exist_ok=True)
        for f, data in zip(files, rendered):
            (args.render_to / f.name).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
            print(f"wrote {args.render_to / f.name} (block {ref})")
        return 0
    for name, automation_id, what in asyncio.run(apply(rendered)):
        print(f"{what} automation {name!r} ({automation_id}), notifying through {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
