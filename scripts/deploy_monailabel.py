#!/usr/bin/env python
# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Serve a trained bundle with MONAI Label 0.8.5, offline (see docs/monailabel.md).

Usage:
    python scripts/deploy_monailabel.py BUNDLE_DIR [--app APP_DIR] [--name NAME] [--copy]
        [--studies FOLDER [--port 8000] [--start]]

Deploys BUNDLE_DIR (with models/model.pt) into APP_DIR/model/NAME of MONAI Label's ``monaibundle`` app
(default APP_DIR: ./monailabel_app), writes APP_DIR/start_NAME.sh and prints the command that serves it
on 127.0.0.1. With ``--start`` it also starts the server in the foreground (Ctrl+C stops it).
Exit status 2 when the bundle cannot be served (the message names the file and the problem).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from monai_ext.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="trained bundle folder (configs/, models/model.pt)")
    parser.add_argument("--app", default="monailabel_app", help="MONAI Label app folder to create or update")
    parser.add_argument("--name", default=None, help="model name (default: the bundle folder name)")
    parser.add_argument("--copy", action="store_true", help="copy the bundle's files instead of linking them")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the strict check of models/model.pt against network_def")
    parser.add_argument("--studies", default=None, help="folder of images to serve (MONAI Label datastore)")
    parser.add_argument("--port", type=int, default=8000, help="server port on 127.0.0.1")
    parser.add_argument("--start", action="store_true", help="start the server now (needs --studies)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from monai_ext.label import deploy_bundle, server_env

    try:
        dep = deploy_bundle(args.bundle, args.app, name=args.name, copy=args.copy, verify=args.verify)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    studies = args.studies or "<images folder>"
    cmd = dep.command(studies if args.studies else ".", port=args.port)
    if not args.studies:
        cmd[cmd.index("--studies") + 1] = studies
    print(f"deployed '{dep.name}' to {dep.model_dir} (labels {dep.spec.labels}, {dep.spec.dimension}D)")
    print(f"start it with:  {dep.app_dir / f'start_{dep.name}.sh'} {shlex.quote(studies)} {args.port}")
    print(f"or:             MONAI_LABEL_TRACKING_ENABLED=false {shlex.join(cmd)}")
    print(f"then:           curl http://127.0.0.1:{args.port}/info/")
    if args.start:
        if not args.studies:
            print("error: --start needs --studies", file=sys.stderr)
            return 2
        os.makedirs(args.studies, exist_ok=True)
        os.execvpe(cmd[0], cmd, server_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
