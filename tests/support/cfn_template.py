"""The reference CloudFormation stack as data: load it, read its policies, trim it for moto.

The template is YAML with CloudFormation's short tags (``!Ref``, ``!Sub``, ``!GetAtt``); cfn-lint's
decoder reads it into the long JSON form (``{"Ref": ...}``, ``{"Fn::GetAtt": [...]}``).

moto's CloudFormation creates only the resource types it implements (its model map). For
the moto run, :func:`trim_for_moto` drops the others and puts a placeholder string wherever
a kept resource refers to a dropped one, so the rest of the stack is still created with its
real wiring.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "actions_of",
    "load_template",
    "moto_supported_types",
    "policy_documents",
    "role_actions",
    "statements",
    "trim_for_moto",
]

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "issuer.yaml"
Template = dict[str, Any]


def load_template(path: Path = TEMPLATE) -> Template:
    from cfnlint.decode import cfn_yaml

    return dict(json.loads(json.dumps(cfn_yaml.load(str(path)))))


def moto_supported_types() -> set[str]:
    """The resource types moto's CloudFormation implements."""
    from moto.cloudformation.parsing import get_model_map

    return {name for name in get_model_map() if name.startswith("AWS::") and name != "AWS::SERVICE::RESOURCE"}


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = document["Statement"]
    return list(found) if isinstance(found, list) else [found]


def actions_of(statement: dict[str, Any]) -> list[str]:
    found = statement.get("Action", [])
    return [found] if isinstance(found, str) else list(found)


def policy_documents(template: Template) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every policy document in the template: (resource name, where, document)."""
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            yield name, "AssumeRolePolicyDocument", props["AssumeRolePolicyDocument"]
            for policy in props.get("Policies", []):
                yield name, f"Policies/{policy['PolicyName']}", policy["PolicyDocument"]
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::S3::BucketPolicy"):
            yield name, "PolicyDocument", props["PolicyDocument"]
        elif kind == "AWS::KMS::Key":
            yield name, "KeyPolicy", props["KeyPolicy"]


def role_actions(template: Template, role: str) -> set[str]:
    """Every action granted to ``role``: its inline policies and the AWS::IAM::Policy resources naming it."""
    resource = template["Resources"][role]
    assert "ManagedPolicyArns" not in resource["Properties"], f"{role} has managed policies the test cannot read"
    documents = [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])]
    for other in template["Resources"].values():
        if other["Type"] == "AWS::IAM::Policy" and {"Ref": role} in other["Properties"]["Roles"]:
            documents.append(other["Properties"]["PolicyDocument"])
    granted: set[str] = set()
    for document in documents:
        for statement in statements(document):
            assert statement["Effect"] == "Allow", statement
            granted.update(actions_of(statement))
    return granted


def matches(pattern: str, action: str) -> bool:
    """Whether an IAM action pattern (``kms:*``, ``kms:Si*``, ``*``) covers ``action`` (case-insensitive)."""
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def trim_for_moto(
    template: Template, supported: set[str], *, stand_ins: Mapping[str, Mapping[str, str]] | None = None
) -> tuple[Template, list[str]]:
    """A copy keeping only ``supported`` resource types; returns it and the dropped resources' names.

    References to a dropped resource become placeholder strings; outputs naming one are dropped.
    ``stand_ins`` names resources made outside the stack instead (moto's CloudFormation would make
    them wrong): each is dropped too, and its ``Ref`` and ``GetAtt`` values (keys ``"Ref"``,
    ``"Arn"``, …) replace the references to it.
    """
    resources = template["Resources"]
    given = dict(stand_ins or {})
    dropped = sorted(name for name, res in resources.items() if res["Type"] not in supported or name in given)
    kept = {name: res for name, res in resources.items() if name not in dropped}
    values = {name: dict(given.get(name, {})) for name in dropped}
    trimmed = {**template, "Resources": _replace(kept, values)}
    for resource in trimmed["Resources"].values():
        depends = resource.get("DependsOn")
        if depends is not None:
            left = [d for d in ([depends] if isinstance(depends, str) else depends) if d not in dropped]
            if left:
                resource["DependsOn"] = left
            else:
                resource.pop("DependsOn")
    outputs = trimmed.get("Outputs", {})
    gone = set(dropped) - set(given)
    trimmed["Outputs"] = {k: _replace(v, values) for k, v in outputs.items() if not _mentions(v, gone)}
    return trimmed, dropped


def _value(values: dict[str, dict[str, str]], name: str, attribute: str | None) -> str:
    known = values[name].get(attribute or "Ref")
    return known if known is not None else f"arn:aws:moto-trimmed:::{name}" + (f"/{attribute}" if attribute else "")


def _replace(node: Any, values: dict[str, dict[str, str]]) -> Any:
    if isinstance(node, list):
        return [_replace(item, values) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"} and node["Ref"] in values:
        return _value(values, node["Ref"], None)
    if set(node) == {"Fn::GetAtt"}:
        target = node["Fn::GetAtt"]
        name, attribute = target if isinstance(target, list) else target.split(".", 1)
        if name in values:
            return _value(values, name, attribute)
    if set(node) == {"Fn::Sub"}:
        value = node["Fn::Sub"]
        if isinstance(value, str):
            return {"Fn::Sub": _sub_text(value, values)}
        text, variables = value
        local = {k: v for k, v in values.items() if k not in variables}
        return {"Fn::Sub": [_sub_text(text, local), _replace(variables, values)]}
    return {key: _replace(value, values) for key, value in node.items()}


def _sub_text(text: str, values: dict[str, dict[str, str]]) -> str:
    def swap(match: re.Match[str]) -> str:
        name, _, attribute = match.group(1).partition(".")
        return _value(values, name, attribute or None) if name in values else match.group(0)

    return re.sub(r"\$\{([A-Za-z0-9]+(?:\.[A-Za-z0-9.]+)?)\}", swap, text)


def _mentions(node: Any, names: set[str]) -> bool:
    text = json.dumps(node)
    return any(f'"{n}"' in text or "${" + n in text for n in names)
