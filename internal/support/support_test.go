package support_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/support"
)

func classifier(t *testing.T, override string) (*support.Classifier, *azsim.Sim) {
	t.Helper()
	sim, err := azsim.New(nil, azsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := armsupport.NewServicesClient(azsim.Credential(), sim.SupportClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	pcs, err := armsupport.NewProblemClassificationsClient(azsim.Credential(), sim.SupportClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	return &support.Classifier{Services: svc, Classifications: pcs, Override: override}, sim
}

// TestClassifyLooksUpOnce finds the stop error classification of "Virtual Machine running
// Windows" through the real armsupport clients, and reads the catalog once per process.
func TestClassifyLooksUpOnce(t *testing.T) {
	t.Parallel()
	c, sim := classifier(t, "")
	for range 3 {
		cl, err := c.Classify(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(cl.DisplayName, "stop error") || !strings.HasPrefix(cl.ClassificationID, cl.ServiceID+"/problemClassifications/") {
			t.Fatalf("classification %+v", cl)
		}
	}
	if n := sim.CallCount("Services.NewListPager") + sim.CallCount("ProblemClassifications.NewListPager"); n != 2 {
		t.Errorf("%d catalog reads for three lookups, want 2", n)
	}
}

func TestClassifyOverride(t *testing.T) {
	t.Parallel()
	id := "/providers/Microsoft.Support/services/svc-guid/problemClassifications/pc-guid"
	c, sim := classifier(t, id)
	cl, err := c.Classify(context.Background())
	if err != nil || cl.ClassificationID != id || cl.ServiceID != "/providers/Microsoft.Support/services/svc-guid" {
		t.Fatalf("%+v %v", cl, err)
	}
	if len(sim.CallLog()) != 0 {
		t.Error("an override still read the catalog")
	}
	if _, err := support.FromID("/subscriptions/x/whatever"); !errors.Is(err, support.ErrNoClassification) {
		t.Errorf("FromID accepted a foreign id: %v", err)
	}
}
