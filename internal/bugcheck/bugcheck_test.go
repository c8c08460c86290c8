package bugcheck

import "testing"

func TestTableSorted(t *testing.T) {
	t.Parallel()
	for i := 1; i < len(table); i++ {
		if table[i-1].Code >= table[i].Code {
			t.Fatalf("table not sorted or duplicated at %s", Hex(table[i].Code))
		}
	}
	for _, info := range table {
		if info.Name == "" || info.Summary == "" {
			t.Errorf("%s: empty name or summary", Hex(info.Code))
		}
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code uint32
		want string
	}{
		{0x7B, "INACCESSIBLE_BOOT_DEVICE"},
		{0xEF, "CRITICAL_PROCESS_DIED"},
		{0x50, "PAGE_FAULT_IN_NONPAGED_AREA"},
		{0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL"},
		{0x3B, "SYSTEM_SERVICE_EXCEPTION"},
		{0x1E, "KMODE_EXCEPTION_NOT_HANDLED"},
		{0x7E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"},
		{0x133, "DPC_WATCHDOG_VIOLATION"},
		{0x9F, "DRIVER_POWER_STATE_FAILURE"},
		{0xC000021A, "WINLOGON_FATAL_ERROR"},
		{0x0A, "IRQL_NOT_LESS_OR_EQUAL"},
		{0x24, "NTFS_FILE_SYSTEM"},
		{0x3D, "INTERRUPT_EXCEPTION_NOT_HANDLED"},
		{0x74, "BAD_SYSTEM_CONFIG_INFO"},
		{0xED, "UNMOUNTABLE_BOOT_VOLUME"},
		{0x1000007E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M"},
		{0x12345, ""},
		{0, ""},
		{0xFFFFFFFF, ""},
	}
	for _, tc := range tests {
		t.Run(Hex(tc.code), func(t *testing.T) {
			t.Parallel()
			if got := Name(tc.code); got != tc.want {
				t.Errorf("Name(%s) = %q, want %q", Hex(tc.code), got, tc.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	if got := Describe(0x7B); got != "0x7B INACCESSIBLE_BOOT_DEVICE" {
		t.Errorf("Describe(0x7B) = %q", got)
	}
	if got := Describe(0x4242); got != "0x4242" {
		t.Errorf("Describe(0x4242) = %q", got)
	}
	if got := Hex(0xC000021A); got != "0xC000021A" {
		t.Errorf("Hex = %q", got)
	}
	if got := Hex(0x7B); got != "0x0000007B" {
		t.Errorf("Hex = %q", got)
	}
}
