#!/usr/bin/env python3
"""Validates custom resource manifests against the openAPIV3Schema of generated CRDs.

Usage: validate_crd_manifests.py CRD_DIR [--expect-invalid] MANIFEST...

Each document whose apiVersion/kind matches a CRD is checked with JSON Schema after
translating the OpenAPI dialect Kubernetes uses (nullable, int-or-string). Unknown
fields are errors, as with kubectl's default strict field validation. CEL rules
(x-kubernetes-validations) need an API server and are not evaluated here.

Without --expect-invalid every manifest must be valid; with it, every manifest must
be rejected (each file is a deliberately broken example).
"""

import copy
import sys
from pathlib import Path

import jsonschema
import yaml


def to_json_schema(node):
    """Translates a structural OpenAPI v3 schema node to JSON Schema, recursively."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("x-kubernetes-validations", "description", "format"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif isinstance(value, (dict, list)):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in out and "additionalProperties" not in out and not out.get(
        "x-kubernetes-preserve-unknown-fields"
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"].append({"type": "null"})
    return out


def load_crds(crd_dir):
    schemas = {}
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            # The API server checks these itself; the CRD schema leaves them out.
            schema.setdefault("properties", {}).update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
            )
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            schemas[key] = to_json_schema(schema)
    return schemas


def errors_of(schemas, path):
    errors = []
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    if not docs:
        errors.append("no documents")
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        schema = schemas.get(key)
        if schema is None:
            errors.append(f"no CRD for {key}")
            continue
        validator = jsonschema.Draft202012Validator(schema)
        for error in validator.iter_errors(doc):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            errors.append(f"{doc['kind']} {where}: {error.message}")
    return errors


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    crd_dir, rest = argv[1], argv[2:]
    expect_invalid = "--expect-invalid" in rest
    manifests = [m for m in rest if m != "--expect-invalid"]
    schemas = load_crds(crd_dir)
    if not schemas:
        print(f"no CRDs in {crd_dir}", file=sys.stderr)
        return 1
    failed = 0
    for path in manifests:
        errors = errors_of(schemas, path)
        if expect_invalid:
            if errors:
                print(f"ok (rejected as expected): {path}: {errors[0]}")
            else:
                print(f"FAIL: {path} was accepted but must be rejected")
                failed += 1
        elif errors:
            print(f"FAIL: {path}")
            for error in errors:
                print(f"  {error}")
            failed += 1
        else:
            print(f"ok: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
