#!/usr/bin/env bash
# Federated ComBat over every DIR/*.csv, one table per site, as separate CLI calls.
#
#   examples/federated_demo.sh DIR
#
# Each DIR/<name>.csv holds one site's rows: a site column (SITE_COL, default "site"),
# feature columns and, optionally, covariate columns (COVARIATES, e.g. "age,sex").
# The script plays every role of the protocol in turn; in a real consortium each
# "site" step runs at that site and only the .npz summaries travel:
#
#   round 1  site:        sitekit federated summarize        -> DIR/federated/<name>.round1.npz
#            coordinator: sitekit federated combine          -> DIR/federated/message1.npz
#   round 2  site:        sitekit federated summarize --round-message message1.npz
#                                                            -> DIR/federated/<name>.round2.npz
#            coordinator: sitekit federated combine          -> DIR/federated/model.npz
#   apply    site:        sitekit harmonize apply            -> DIR/<name>.harmonized.csv
#
# Settings (environment variables; edit the defaults here for your data):
SITEKIT=${SITEKIT:-sitekit}           # command to run sitekit (e.g. ".venv/bin/sitekit")
SITE_COL=${SITE_COL:-site}            # the site column
COVARIATES=${COVARIATES:-}            # comma-separated covariate columns, e.g. "age,sex"
CATEGORICAL=${CATEGORICAL:-}          # covariates to force categorical, e.g. "sex"
COMBINE_OPTIONS=${COMBINE_OPTIONS:-}  # e.g. "--nonparametric" or "--ref-site s01"
MIN_SITE_SIZE=${MIN_SITE_SIZE:-10}

set -euo pipefail

if [[ $# -ne 1 || ! -d "$1" ]]; then
    echo "usage: $0 DIR   (DIR holds one CSV table per site)" >&2
    exit 2
fi
DIR=${1%/}
WORK="$DIR/federated"
mkdir -p "$WORK"

tables=()
for t in "$DIR"/*.csv; do
    [[ -e "$t" ]] || continue
    [[ "$t" == *.harmonized.csv ]] && continue
    tables+=("$t")
done
if [[ ${#tables[@]} -lt 2 ]]; then
    echo "$0: need at least two site tables (*.csv) in $DIR, found ${#tables[@]}" >&2
    exit 2
fi

site_args=(--site-col "$SITE_COL" --min-site-size "$MIN_SITE_SIZE")
[[ -n "$COVARIATES" ]] && site_args+=(--covariates "$COVARIATES")
[[ -n "$CATEGORICAL" ]] && site_args+=(--categorical "$CATEGORICAL")
# shellcheck disable=SC2206
combine_args=($COMBINE_OPTIONS)

echo "== round 1: each site summarises its table"
round1=()
for t in "${tables[@]}"; do
    name=$(basename "$t" .csv)
    $SITEKIT federated summarize "$t" "${site_args[@]}" --out "$WORK/$name.round1.npz" --force
    round1+=("$WORK/$name.round1.npz")
done

echo "== round 1: the coordinator combines"
$SITEKIT federated combine "${round1[@]}" "${combine_args[@]}" --out "$WORK/message1.npz" --force

echo "== round 2: each site summarises its residuals"
round2=()
for t in "${tables[@]}"; do
    name=$(basename "$t" .csv)
    $SITEKIT federated summarize "$t" "${site_args[@]}" --round-message "$WORK/message1.npz" \
        --out "$WORK/$name.round2.npz" --force
    round2+=("$WORK/$name.round2.npz")
done

echo "== round 2: the coordinator fits the model"
$SITEKIT federated combine "${round2[@]}" --round-message "$WORK/message1.npz" \
    "${combine_args[@]}" --out "$WORK/model.npz" --force

echo "== apply: each site harmonises its own rows"
for t in "${tables[@]}"; do
    name=$(basename "$t" .csv)
    $SITEKIT harmonize apply "$t" --model "$WORK/model.npz" --out "$DIR/$name.harmonized.csv" --force
done
echo "done: model in $WORK/model.npz, harmonised tables in $DIR/*.harmonized.csv"
