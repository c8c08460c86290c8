#!/usr/bin/env bash
# Deploy vmrescue with the az CLI (the alternative to `azd up`): provision infra/main.bicep at
# subscription scope, deploy the package that `make package` built, then provision again with the
# Health Resources event subscriptions (Event Grid only accepts them once HealthAlert exists).
#
#   infra/deploy.sh -p infra/main.parameters.local.json [-e ENV_NAME] [-l LOCATION] [-z dist/vmrescue.zip]
#
# Needs: az (2.60 or later, logged in, on the target subscription: `az account set -s ...`), with
# Owner, or Contributor and User Access Administrator, on every subscription involved; python3
# (reads JSON).
# Environment: VMRESCUE_RESCUE_ADMIN_PASSWORD, the rescue VMs' administrator password, when the
# parameters create rescue VMs (kept out of the command line and of parameter files).
set -euo pipefail

readonly poll_interval=10 # seconds between checks that HealthAlert exists
readonly poll_attempts=30 # so at most five minutes
readonly upload_attempts=6 # the deployer's new role on the package container takes time to apply

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
params=""
env_name=""
location=""
zip="$root/dist/vmrescue.zip"

usage() {
	sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
}

while getopts "p:e:l:z:h" opt; do
	case "$opt" in
	p) params=$OPTARG ;;
	e) env_name=$OPTARG ;;
	l) location=$OPTARG ;;
	z) zip=$OPTARG ;;
	*) usage ;;
	esac
done

log() { printf 'vmrescue: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

command -v az >/dev/null || die "the az CLI is not installed"
[ -n "$params" ] || die "give a parameters file with -p (start from infra/main.parameters.example.json)"
[ -f "$params" ] || die "no parameters file $params"
[ -f "$zip" ] || die "no package $zip: run make package"
az account show -o none 2>/dev/null || die "not logged in: run az login"

# Values given on the command line override the parameters file.
param_value() {
	python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["parameters"]; print(p.get(sys.argv[2],{}).get("value",""))' "$params" "$1" 2>/dev/null || true
}
[ -n "$env_name" ] || env_name=$(param_value environmentName)
[ -n "$location" ] || location=$(param_value location)
[ -n "$env_name" ] || die "no environment name: give -e or environmentName in $params"
[ -n "$location" ] || die "no location: give -l or location in $params"

# The deployer may upload the app package (Elastic Premium) to its container.
principal_type=$(az account show --query user.type -o tsv)
if [ "$principal_type" = "servicePrincipal" ]; then
	principal_id=$(az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv)
	principal_type=ServicePrincipal
else
	principal_id=$(az ad signed-in-user show --query id -o tsv)
	principal_type=User
fi

# Secure values travel in a private parameters file, removed on exit.
secrets=$(mktemp)
chmod 600 "$secrets"
trap 'rm -f "$secrets"' EXIT
python3 - "$secrets" <<'PY'
import json, os, sys
p = {}
if os.environ.get("VMRESCUE_RESCUE_ADMIN_PASSWORD"):
    p["rescueAdminPassword"] = {"value": os.environ["VMRESCUE_RESCUE_ADMIN_PASSWORD"]}
json.dump({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
           "contentVersion": "1.0.0.0", "parameters": p}, open(sys.argv[1], "w"))
PY

deployment="vmrescue-$env_name"

# provision SUBSCRIBE: deploys main.bicep; prints its outputs as JSON.
provision() {
	log "provisioning $deployment in $location (subscribeHealthAlerts=$1)"
	az deployment sub create \
		--name "$deployment" \
		--location "$location" \
		--template-file "$here/main.bicep" \
		--parameters "@$params" \
		--parameters "@$secrets" \
		--parameters environmentName="$env_name" location="$location" \
		deployerPrincipalId="$principal_id" deployerPrincipalType="$principal_type" \
		subscribeHealthAlerts="$1" \
		--query properties.outputs -o json
}

# outputs NAME...: the values of the named deployment outputs (JSON on stdin), separated by the
# unit separator (not whitespace, so that an empty value keeps its place).
outputs() {
	python3 -c 'import json,sys; o=json.load(sys.stdin); print("\x1f".join(str(o[n]["value"]) for n in sys.argv[1:]))' "$@"
}

has_health_alert() {
	az functionapp function show -g "$1" -n "$2" --function-name HealthAlert -o none 2>/dev/null
}

# A redeploy of a running app subscribes in the same pass; a first deploy subscribes once the code
# is there.
subscribe=false
if previous=$(az deployment sub show --name "$deployment" --query properties.outputs -o json 2>/dev/null) &&
	[ -n "$previous" ] && [ "$previous" != "null" ]; then
	IFS=$'\x1f' read -r group app < <(outputs AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME <<<"$previous")
	if has_health_alert "$group" "$app"; then
		subscribe=true
	fi
fi

result=$(provision "$subscribe")
IFS=$'\x1f' read -r group app app_id plan account container rescue_vms < <(outputs AZURE_RESOURCE_GROUP \
	AZURE_FUNCTION_APP_NAME VMRESCUE_FUNCTION_APP_ID VMRESCUE_PLAN_TYPE VMRESCUE_STORAGE_ACCOUNT \
	VMRESCUE_DEPLOYMENT_CONTAINER VMRESCUE_RESCUE_VMS <<<"$result")
[ -n "$rescue_vms" ] ||
	log "warning: no rescue VMs (rescueVms, existingRescueVmIds): the handler will refuse to start"

log "deploying $zip to $app ($plan)"
if [ "$plan" = "FlexConsumption" ]; then
	az functionapp deployment source config-zip -g "$group" -n "$app" --src "$zip" -o none
else
	# Elastic Premium runs the package from blob storage (WEBSITE_RUN_FROM_PACKAGE) with its identity.
	for attempt in $(seq 1 "$upload_attempts"); do
		if az storage blob upload --auth-mode login --account-name "$account" \
			--container-name "$container" --name vmrescue.zip --file "$zip" --overwrite -o none; then
			break
		fi
		[ "$attempt" -lt "$upload_attempts" ] || die "could not upload the package to $account/$container"
		log "upload refused (role assignment still applying?), retrying in 30s"
		sleep 30
	done
	az functionapp restart -g "$group" -n "$app" -o none
	az rest --method post --url "https://management.azure.com${app_id}/syncfunctiontriggers?api-version=2024-04-01" -o none
fi

if [ "$subscribe" = false ]; then
	log "waiting for the HealthAlert function"
	for attempt in $(seq 1 "$poll_attempts"); do
		if has_health_alert "$group" "$app"; then
			break
		fi
		[ "$attempt" -lt "$poll_attempts" ] || die "HealthAlert did not appear in $app; check the deployment, then run this script again"
		sleep "$poll_interval"
	done
	provision true >/dev/null
fi
log "done: $app in $group; Resource Health alerts go to HealthAlert"
