#!/bin/sh
# azd postdeploy hook: once the app code (and so the HealthAlert function) is deployed, provision
# again with the Health Resources event subscriptions. Runs once per environment; later `azd up`
# runs provision with them from the start.
set -eu

if [ "${VMRESCUE_SUBSCRIBE_HEALTH_ALERTS:-false}" = "true" ]; then
	exit 0
fi
echo "vmrescue: subscribing HealthAlert to Resource Health events (provisioning again)"
azd env set VMRESCUE_SUBSCRIBE_HEALTH_ALERTS true
# The function list of a fresh deployment can take a moment to appear in ARM: a bounded retry.
for attempt in 1 2 3; do
	if azd provision --no-prompt; then
		exit 0
	fi
	echo "vmrescue: provisioning with the event subscriptions failed (attempt $attempt of 3)" >&2
	sleep 30
done
echo "vmrescue: run 'azd provision' again once 'HealthAlert' shows in the Function App" >&2
exit 1
