package demo

import (
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

func TestCriticalPath(t *testing.T) {
	t.Parallel()
	const vm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/App-Web-01"
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ops := []azsim.Operation{
		{Name: "Snapshots.BeginCreateOrUpdate", Resource: "snap", Start: at(1), End: at(2)},
		{Name: azsim.LatencySnapshotCopy, Resource: "snap", Start: at(2), End: at(4)},
		{Name: "VirtualMachines.BeginStart", Resource: "/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/app-web-01", Start: at(10), End: at(11)},
	}
	calls := []azsim.Call{
		{Op: "VirtualMachines.Get", Time: at(0.5), Latency: 200 * time.Millisecond}, // alone: counts
		{Op: "Snapshots.Get", Time: at(3), Latency: 500 * time.Millisecond},         // inside the copy: does not
		{Op: "Poll", Time: at(5), Poll: true},                                       // no latency
	}
	alert := func(s float64, subject string) localhost.Invocation {
		return localhost.Invocation{Function: "HealthAlert", Subject: subject, Start: at(s)}
	}
	cases := []struct {
		name     string
		alerts   []localhost.Invocation
		wait     time.Duration
		from, to float64
		want     time.Duration
	}{
		{name: "crash alert brings the harvest forward", alerts: []localhost.Invocation{alert(0, vm), alert(14, vm)},
			wait: 10 * time.Second, from: 0, to: 30, want: 200*time.Millisecond + 3*time.Second + time.Second + 3*time.Second},
		{name: "scheduled harvest first", alerts: []localhost.Invocation{alert(20, vm)},
			wait: 2 * time.Second, from: 0, to: 30, want: 200*time.Millisecond + 3*time.Second + time.Second + 2*time.Second},
		{name: "another VM's alert does not count", alerts: []localhost.Invocation{alert(12, "/subscriptions/s/other")},
			wait: 5 * time.Second, from: 0, to: 30, want: 200*time.Millisecond + 3*time.Second + time.Second + 5*time.Second},
		{name: "clipped to the window", wait: 5 * time.Second, from: 1.5, to: 3,
			want: 1500 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := criticalPath(calls, ops, tc.alerts, vm, tc.wait, at(tc.from), at(tc.to))
			if got != tc.want {
				t.Errorf("critical path %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReproWait(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env   []string
		scale float64
		want  time.Duration
	}{
		{nil, 0.01, 6 * time.Second}, // the default 10m
		{[]string{"VMRESCUE_REPRO_WAIT=2m"}, 0.05, 6 * time.Second},
		{[]string{"VMRESCUE_REPRO_WAIT=1m"}, 0, time.Minute},
	}
	for _, tc := range cases {
		if got := reproWait(tc.env, tc.scale); got != tc.want {
			t.Errorf("reproWait(%v, %v) = %v, want %v", tc.env, tc.scale, got, tc.want)
		}
	}
}
