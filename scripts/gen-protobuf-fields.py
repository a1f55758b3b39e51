#!/usr/bin/env python3
"""Derives proto/gofields.tsv from the Go API types of a Kubernetes release.

The vendored .proto files give every message's layout, but not how the Go types behind them
render as JSON. Four facts come only from the Go struct tags, and the transcoder in
src/protobuf needs them to produce the JSON that kube-apiserver produces:

  * the JSON name, where it differs from the proto field name (`$ref`, `x-kubernetes-*`);
  * `inline`: the field's members are flattened into the parent's JSON (Volume.volumeSource);
  * `ptr` and `noomit`: the Go field is a pointer (`replicas *int32`), or has no `omitempty`
    (`ContainerStatus.ready`). Either way its zero value is rendered in JSON. Go's protobuf
    marshaller writes every non-pointer field, so without these a zero on the wire cannot
    tell `replicas: 0` from an absent `generation`;
  * `@order`: the Go declaration order of a message's fields, which is the order Go renders
    JSON in (the .proto files list fields by number);
  * `@group`: the API group a package's kinds belong to (its +groupName or GroupName);
  * `array`: a message that stands for a Go slice (`type Verbs []string`), rendered as the
    bare JSON array of its `items`.

Usage: scripts/gen-protobuf-fields.py TAG API_GIT APIMACHINERY_GIT APIEXTENSIONS_GIT > proto/gofields.tsv
where each *_GIT is a clone (or bare git directory) of k8s.io/api, k8s.io/apimachinery and
k8s.io/apiextensions-apiserver, and TAG a tag they share (e.g. v0.36.3).
"""

import re
import subprocess
import sys

TAG = sys.argv[1]
REPOS = {
    "k8s.io/api": sys.argv[2],
    "k8s.io/apimachinery": sys.argv[3],
    "k8s.io/apiextensions-apiserver": sys.argv[4],
}


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout


STRUCT = re.compile(r"^type (\w+) struct \{")
SLICE = re.compile(r"^type (\w+) \[\]\w+\s*$")
FIELD = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
JSON_TAG = re.compile(r'json:"([^"]*)"')
PROTO_TAG = re.compile(r'protobuf:"([^"]*)"')

rows = []
for module, repo in REPOS.items():
    files = git(repo, "ls-tree", "-r", "--name-only", TAG).split()
    for proto in files:
        if not proto.endswith("/generated.proto"):
            continue
        directory = proto.rsplit("/", 1)[0]
        # Only the packages vendored under proto/ (the stable API versions).
        vendored = f"proto/{module}/{proto}"
        try:
            open(vendored).close()
        except FileNotFoundError:
            continue
        package = re.search(r"^package ([\w.]+);", git(repo, "show", f"{TAG}:{proto}"), re.M).group(1)
        for go in files:
            if go.startswith(directory + "/") and go.endswith(".go") and "/" not in go[len(directory) + 1:]:
                group = re.search(r'^(?://\s*\+groupName=(\S*)|const GroupName = "([^"]*)")', git(repo, "show", f"{TAG}:{go}"), re.M)
                if group:
                    rows.append((package, "@group", group.group(1) or group.group(2) or "", "-"))
        messages = set(re.findall(r"^message (\w+) \{", git(repo, "show", f"{TAG}:{proto}"), re.M))
        for go in files:
            if not (go.startswith(directory + "/") and go.endswith(".go")) or "/" in go[len(directory) + 1:]:
                continue
            if go.endswith("_test.go") or "zz_generated" in go or go.endswith("generated.pb.go"):
                continue
            struct = None
            order = []
            for line in git(repo, "show", f"{TAG}:{go}").splitlines():
                slice_type = SLICE.match(line)
                if slice_type and slice_type.group(1) in messages:
                    rows.append((f"{package}.{slice_type.group(1)}", "*", "-", "array"))
                    continue
                start = STRUCT.match(line)
                if start:
                    struct = start.group(1) if start.group(1) in messages else None
                    continue
                if line.startswith("}"):
                    if struct is not None and order:
                        rows.append((f"{package}.{struct}", "@order", ",".join(order), "-"))
                    struct = None
                    order = []
                    continue
                if struct is None:
                    continue
                field = FIELD.match(line)
                if not field:
                    continue
                name, go_type, tags = field.groups()
                proto_name = PROTO_TAG.search(tags)
                json_tag = JSON_TAG.search(tags)
                if not proto_name or not json_tag:
                    continue
                # An embedded struct's tag may omit the name: go-to-protobuf then names the
                # field after the type, lower camel case (EphemeralContainerCommon).
                embedded = (name or go_type.split(".")[-1]).lstrip("*")
                named = [part[5:] for part in proto_name.group(1).split(",") if part.startswith("name=")]
                proto_name = named[0] if named else embedded[0].lower() + embedded[1:]
                order.append(proto_name)
                json_parts = json_tag.group(1).split(",")
                flags = []
                json_name = json_parts[0]
                if "inline" in json_parts[1:]:
                    flags.append("inline")
                    json_name = "-"
                elif json_name == "-":
                    flags.append("nojson")
                if go_type.startswith("*"):
                    flags.append("ptr")
                if "omitempty" not in json_parts[1:] and "inline" not in json_parts[1:] and json_name != "-":
                    flags.append("noomit")
                if json_name in ("-", proto_name) and not flags:
                    continue
                rows.append((f"{package}.{struct}", proto_name, json_name if json_name else proto_name, ",".join(flags) or "-"))

print(f"# Generated by scripts/gen-protobuf-fields.py from the Go types of Kubernetes {TAG}. Do not edit.")
print("# message\tproto field\tjson name\tflags (inline, ptr, noomit, nojson; array for a whole message)")
for row in sorted(set(rows)):
    print("\t".join(row))
