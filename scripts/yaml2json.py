#!/usr/bin/env python3
"""Multi-document YAML on stdin -> one JSON array on stdout (used by scripts/lint-deploy.sh and
tests/tests/deploy_lint.rs). CloudFormation short tags (!Ref, !Sub, !If, …) become their long
form ({"Ref": …}, {"Fn::Sub": …}), as CloudFormation reads them."""
import json
import sys

import yaml


class Loader(yaml.SafeLoader):
    pass


def _cfn(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + suffix: value}


Loader.add_multi_constructor("!", _cfn)

docs = [d for d in yaml.load_all(sys.stdin, Loader=Loader) if d is not None]
json.dump(docs, sys.stdout)
