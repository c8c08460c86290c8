package audit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// TestFirstAppendCreatesTheContainer: the first record written before the container exists (the
// handler creates it in the background at start) still lands.
func TestFirstAppendCreatesTheContainer(t *testing.T) {
	s := audit.New(azuritetest.Client(t), azuritetest.Container(t, "noaudit"))
	const id = "inc-20261120-031407-aaaa01"
	if _, err := s.State(context.Background(), id); !errors.Is(err, audit.ErrNotFound) {
		t.Fatalf("State before the container exists = %v, want ErrNotFound", err)
	}
	const vm = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
	rec, err := s.Append(context.Background(), id, audit.Entry{VMResourceID: vm, Stage: "intake", Event: incident.EventOpened})
	if err != nil || rec.Seq != 1 {
		t.Fatalf("Append on a missing container = %+v %v", rec, err)
	}
}
