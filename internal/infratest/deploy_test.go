package infratest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// fakeAz stands in for the az CLI, which cannot reach Azure here: it records each call in
// $AZ_LOG, answers the calls infra/deploy.sh makes with canned values, and keeps the state that
// matters (whether the package was deployed) in files under $AZ_STATE.
const fakeAz = `#!/usr/bin/env bash
set -u
echo "az $*" >>"$AZ_LOG"
for a in "$@"; do
	case "$a" in
	@*) f=${a#@}; if [ "$f" != "$AZ_PARAMS" ]; then echo "secrets-file $(cat "$f")" >>"$AZ_LOG"; fi ;;
	esac
done
outputs='{"AZURE_RESOURCE_GROUP":{"value":"rg-test"},"AZURE_FUNCTION_APP_NAME":{"value":"func-test"},
"VMRESCUE_FUNCTION_APP_ID":{"value":"/subscriptions/s/resourceGroups/rg-test/providers/Microsoft.Web/sites/func-test"},
"VMRESCUE_PLAN_TYPE":{"value":"'"$AZ_PLAN"'"},"VMRESCUE_STORAGE_ACCOUNT":{"value":"sttest"},
"VMRESCUE_DEPLOYMENT_CONTAINER":{"value":"app-package"},"VMRESCUE_RESCUE_VMS":{"value":"/subscriptions/s/x"}}'
case "$1 $2" in
"account show")
	case "$*" in
	*user.type*) echo user ;;
	*user.name*) echo someone ;;
	esac ;;
"ad signed-in-user") echo 00000000-0000-0000-0000-00000000000a ;;
"deployment sub")
	case "$3" in
	show) [ -f "$AZ_STATE/deployed" ] || exit 3; echo "$outputs" ;;
	create) echo "$outputs" ;;
	esac ;;
"functionapp deployment") touch "$AZ_STATE/deployed" ;;
"functionapp function") [ -f "$AZ_STATE/deployed" ] || exit 3 ;;
"storage blob") touch "$AZ_STATE/deployed" ;;
esac
exit 0
`

// TestDeployScript runs infra/deploy.sh against fakeAz and checks the order of its calls: the
// event subscriptions are only requested once HealthAlert exists, and secrets never reach the
// command line.
func TestDeployScript(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("deploy.sh is a bash script")
	}
	for _, tool := range []string{"bash", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	root := repoRoot(t)
	const password = "pa ss'w\"ord"

	tests := []struct {
		name       string
		plan       string
		redeploy   bool // the app already runs HealthAlert
		wantInLog  []string
		wantCreate []string // subscribeHealthAlerts value of each deployment, in order
	}{
		{
			name:       "first deployment, Flex Consumption",
			plan:       "FlexConsumption",
			wantInLog:  []string{"functionapp deployment source config-zip -g rg-test -n func-test", "functionapp function show -g rg-test -n func-test --function-name HealthAlert"},
			wantCreate: []string{"false", "true"},
		},
		{
			name:       "first deployment, Elastic Premium",
			plan:       "ElasticPremium",
			wantInLog:  []string{"storage blob upload --auth-mode login --account-name sttest --container-name app-package --name vmrescue.zip", "functionapp restart -g rg-test -n func-test", "/syncfunctiontriggers"},
			wantCreate: []string{"false", "true"},
		},
		{
			name:       "redeployment subscribes in one pass",
			plan:       "FlexConsumption",
			redeploy:   true,
			wantInLog:  []string{"deployment sub show --name vmrescue-test", "functionapp deployment source config-zip"},
			wantCreate: []string{"true"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			state := filepath.Join(dir, "state")
			for _, d := range []string{bin, state} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(bin, "az"), []byte(fakeAz), 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.redeploy {
				if err := os.WriteFile(filepath.Join(state, "deployed"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			zip := filepath.Join(dir, "vmrescue.zip")
			if err := os.WriteFile(zip, []byte("PK"), 0o644); err != nil {
				t.Fatal(err)
			}
			params := filepath.Join(root, "infra", "main.parameters.example.json")
			log := filepath.Join(dir, "az.log")

			cmd := exec.Command("bash", filepath.Join(root, "infra", "deploy.sh"), "-p", params, "-e", "test", "-z", zip)
			cmd.Env = append(os.Environ(),
				"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
				"AZ_LOG="+log, "AZ_STATE="+state, "AZ_PLAN="+tc.plan, "AZ_PARAMS="+params,
				"VMRESCUE_RESCUE_ADMIN_PASSWORD="+password,
			)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("deploy.sh: %v\n%s", err, out)
			}
			raw, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			calls := strings.Split(strings.TrimSpace(string(raw)), "\n")

			var creates []string
			subscribedAt, lastDeploy, lastFunctionShow := -1, -1, -1
			for i, c := range calls {
				if strings.HasPrefix(c, "az ") && strings.Contains(c, password) {
					t.Errorf("the password is on the az command line: %s", c)
				}
				switch {
				case strings.HasPrefix(c, "az deployment sub create"):
					v := "false"
					if strings.Contains(c, "subscribeHealthAlerts=true") {
						v = "true"
						if subscribedAt < 0 {
							subscribedAt = i
						}
					}
					creates = append(creates, v)
				case strings.Contains(c, "config-zip") || strings.Contains(c, "storage blob upload"):
					lastDeploy = i
				case strings.Contains(c, "functionapp function show"):
					lastFunctionShow = i
				}
			}
			if strings.Join(creates, ",") != strings.Join(tc.wantCreate, ",") {
				t.Errorf("deployments with subscribeHealthAlerts = %v, want %v\n%s", creates, tc.wantCreate, raw)
			}
			if !tc.redeploy && (subscribedAt < lastDeploy || subscribedAt < lastFunctionShow) {
				t.Errorf("event subscriptions requested (call %d) before the code was deployed (%d) and HealthAlert seen (%d)\n%s", subscribedAt, lastDeploy, lastFunctionShow, raw)
			}
			if !strings.Contains(string(raw), "secrets-file ") || !strings.Contains(string(raw), `"rescueAdminPassword"`) {
				t.Errorf("the password did not travel in a parameters file\n%s", raw)
			}
			for _, w := range tc.wantInLog {
				if !strings.Contains(string(raw), w) {
					t.Errorf("no call %q\n%s", w, raw)
				}
			}
		})
	}
}
