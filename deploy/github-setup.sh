#!/usr/bin/env bash
# The GitHub side of the deploy, once per repository (docs/deploy.md "First deploy"). Idempotent: run it again
# after changing a value; it converges instead of duplicating.
#
#   deploy/github-setup.sh <org>/<repo> <bootstrap-stack> <reviewer> [<reviewer>...]
#     reviewer: a GitHub login, or team:<slug> for a team of the organisation
#   optional settings (repository variables the deploy workflow passes to deploy/template.yaml; unset = the
#   template's default): API_AUTH JWT_ISSUER JWT_AUDIENCE THROTTLING_RATE_LIMIT THROTTLING_BURST_LIMIT
#   RESERVED_CONCURRENCY MEMORY_SIZE TIMEOUT ARCHITECTURE DEPLOYMENT_PREFERENCE LOG_RETENTION_DAYS
#   ALARM_P99_DURATION_MS STACK_NAME,
#   e.g. `RESERVED_CONCURRENCY=20 deploy/github-setup.sh ...`
#
# Needs `gh` logged in as a repository admin and `aws` with credentials for the account where deploy/bootstrap.yaml
# was deployed (its outputs become the variables). What it sets, and why:
#   1. environment `production`: required reviewers, and deployments only from the branch `main`. GitHub creates an
#      environment, unprotected, the first time any job names it; this makes it protected before that happens.
#   2. the OIDC subject carries job_workflow_ref (repo, context, job_workflow_ref), which the deploy role's trust
#      policy pins to deploy.yml on main in `production`, the report role to pull requests and the gate, and the
#      training role to train.yml dispatched on a branch.
#   3. the repository variables the workflows read (no secrets: OIDC roles, no keys).
set -euo pipefail

if [ "$#" -lt 3 ]; then
  sed -n '4,11p' "$0" >&2
  exit 2
fi
repo="$1" bootstrap_stack="$2"
shift 2
org="${repo%%/*}"

# 1. The protected environment.
reviewers="["
for reviewer in "$@"; do
  if [[ "$reviewer" == team:* ]]; then
    id="$(gh api "orgs/$org/teams/${reviewer#team:}" --jq .id)"
    reviewers+="{\"type\":\"Team\",\"id\":$id},"
  else
    id="$(gh api "users/$reviewer" --jq .id)"
    reviewers+="{\"type\":\"User\",\"id\":$id},"
  fi
done
reviewers="${reviewers%,}]"
gh api --method PUT "repos/$repo/environments/production" --input - <<JSON
{"reviewers": $reviewers, "prevent_self_review": true,
 "deployment_branch_policy": {"protected_branches": false, "custom_branch_policies": true}}
JSON
policies="$(gh api "repos/$repo/environments/production/deployment-branch-policies" --jq '.branch_policies[] | "\(.id) \(.type) \(.name)"')"
while read -r id type name; do # anything but the branch `main` goes: only main may deploy
  if [ -n "${id:-}" ] && [ "$type $name" != "branch main" ]; then
    gh api --method DELETE "repos/$repo/environments/production/deployment-branch-policies/$id"
  fi
done <<<"$policies"
if ! grep -qx "[0-9]* branch main" <<<"$policies"; then
  gh api --method POST "repos/$repo/environments/production/deployment-branch-policies" -f name=main -f type=branch
fi

# 2. The OIDC subject the AWS roles' trust policies match.
gh api --method PUT "repos/$repo/actions/oidc/customization/sub" --input - <<JSON
{"use_default": false, "include_claim_keys": ["repo", "context", "job_workflow_ref"]}
JSON

# 3. Repository variables from the bootstrap stack's outputs, then the optional settings.
output() {
  aws cloudformation describe-stacks --stack-name "$bootstrap_stack" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue | [0]" --output text
}
region="${AWS_REGION:-$(aws configure get region)}"
ecr_uri="$(output EcrRepositoryUri)"
gh variable set AWS_REGION --repo "$repo" --body "$region"
gh variable set AWS_DEPLOY_ROLE_ARN --repo "$repo" --body "$(output DeployRoleArn)"
gh variable set AWS_REPORT_ROLE_ARN --repo "$repo" --body "$(output ReportRoleArn)"
gh variable set AWS_TRAIN_ROLE_ARN --repo "$repo" --body "$(output TrainRoleArn)"
gh variable set ECR_REPOSITORY --repo "$repo" --body "${ecr_uri#*/}"
gh variable set DVC_S3_URL --repo "$repo" --body "$(output DvcRemoteUrl)"
gh variable set SAM_ARTIFACTS_BUCKET --repo "$repo" --body "$(output ArtifactsBucketName)"
for name in API_AUTH JWT_ISSUER JWT_AUDIENCE THROTTLING_RATE_LIMIT THROTTLING_BURST_LIMIT RESERVED_CONCURRENCY \
    MEMORY_SIZE TIMEOUT ARCHITECTURE DEPLOYMENT_PREFERENCE LOG_RETENTION_DAYS ALARM_P99_DURATION_MS STACK_NAME; do
  if [ -n "${!name:-}" ]; then gh variable set "$name" --repo "$repo" --body "${!name}"; fi
done
echo "github-setup: $repo: environment production (main only, reviewers: $*), OIDC subject, variables set"
