// Package bugcheck names Windows stop codes (bug check codes): the ones Azure VMs most often
// show at boot, and the common ones a dump header may carry. Names are those of Microsoft's bug
// check code reference.
package bugcheck

import (
	"fmt"
	"sort"
)

// Info describes one bug check code.
type Info struct {
	Code uint32
	Name string
	// Summary is one line on what the code usually means for a VM that fails to boot.
	Summary string
}

// table holds the known codes. Keep it sorted by code (TestTableSorted checks).
var table = []Info{
	{0x0000000A, "IRQL_NOT_LESS_OR_EQUAL", "kernel-mode code touched pageable or invalid memory at a raised IRQL"},
	{0x00000019, "BAD_POOL_HEADER", "a pool header is corrupt"},
	{0x0000001A, "MEMORY_MANAGEMENT", "a severe memory management error"},
	{0x0000001E, "KMODE_EXCEPTION_NOT_HANDLED", "a kernel-mode program raised an exception that no handler caught"},
	{0x00000024, "NTFS_FILE_SYSTEM", "a problem in ntfs.sys, often a corrupt volume"},
	{0x0000002E, "DATA_BUS_ERROR", "a parity error in memory"},
	{0x0000003B, "SYSTEM_SERVICE_EXCEPTION", "an exception while running a system service routine"},
	{0x0000003D, "INTERRUPT_EXCEPTION_NOT_HANDLED", "an exception in an interrupt service routine"},
	{0x0000003F, "NO_MORE_SYSTEM_PTES", "system page table entries ran out"},
	{0x0000004E, "PFN_LIST_CORRUPT", "the page frame number list is corrupt"},
	{0x00000050, "PAGE_FAULT_IN_NONPAGED_AREA", "invalid system memory was referenced"},
	{0x0000005A, "CRITICAL_SERVICE_FAILED", "a critical service failed to start"},
	{0x0000005C, "HAL_INITIALIZATION_FAILED", "the hardware abstraction layer failed to initialize"},
	{0x00000067, "CONFIG_INITIALIZATION_FAILED", "the registry could not be initialized"},
	{0x0000006B, "PROCESS1_INITIALIZATION_FAILED", "the system process failed to initialize"},
	{0x00000074, "BAD_SYSTEM_CONFIG_INFO", "an error in the registry, often a damaged SYSTEM hive"},
	{0x00000077, "KERNEL_STACK_INPAGE_ERROR", "a kernel stack page could not be read from the paging file"},
	{0x00000079, "MISMATCHED_HAL", "the HAL does not match the kernel or the machine"},
	{0x0000007A, "KERNEL_DATA_INPAGE_ERROR", "a kernel data page could not be read from the paging file"},
	{0x0000007B, "INACCESSIBLE_BOOT_DEVICE", "Windows lost access to the system partition during startup"},
	{0x0000007E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED", "a system thread raised an exception that no handler caught"},
	{0x0000007F, "UNEXPECTED_KERNEL_MODE_TRAP", "the CPU raised a trap that the kernel did not catch"},
	{0x00000080, "NMI_HARDWARE_FAILURE", "a non-maskable interrupt, such as an NMI sent to crash the VM"},
	{0x0000008E, "KERNEL_MODE_EXCEPTION_NOT_HANDLED", "a kernel-mode application raised an exception that no handler caught"},
	{0x0000009C, "MACHINE_CHECK_EXCEPTION", "a fatal machine check"},
	{0x0000009F, "DRIVER_POWER_STATE_FAILURE", "a driver is in an inconsistent or invalid power state"},
	{0x000000A0, "INTERNAL_POWER_ERROR", "the power policy manager hit a fatal error"},
	{0x000000A5, "ACPI_BIOS_ERROR", "the ACPI BIOS is not fully compliant"},
	{0x000000BE, "ATTEMPTED_WRITE_TO_READONLY_MEMORY", "a driver wrote to read-only memory"},
	{0x000000C2, "BAD_POOL_CALLER", "a thread made a bad pool request"},
	{0x000000C4, "DRIVER_VERIFIER_DETECTED_VIOLATION", "Driver Verifier caught a driver error"},
	{0x000000C5, "DRIVER_CORRUPTED_EXPOOL", "a driver accessed invalid pool memory at a raised IRQL"},
	{0x000000CA, "PNP_DETECTED_FATAL_ERROR", "the Plug and Play manager hit a fatal error"},
	{0x000000D1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL", "a driver touched pageable or invalid memory at a raised IRQL"},
	{0x000000E2, "MANUALLY_INITIATED_CRASH", "a crash was started on purpose (keyboard)"},
	{0x000000EA, "THREAD_STUCK_IN_DEVICE_DRIVER", "a thread spun in a device driver"},
	{0x000000ED, "UNMOUNTABLE_BOOT_VOLUME", "the boot volume could not be mounted"},
	{0x000000EF, "CRITICAL_PROCESS_DIED", "a critical system process ended"},
	{0x000000F2, "HARDWARE_INTERRUPT_STORM", "an interrupt storm"},
	{0x000000F4, "CRITICAL_OBJECT_TERMINATION", "a process or thread crucial to the system ended"},
	{0x000000F7, "DRIVER_OVERRAN_STACK_BUFFER", "a driver overran a stack buffer"},
	{0x000000FC, "ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY", "code ran from non-executable memory"},
	{0x00000101, "CLOCK_WATCHDOG_TIMEOUT", "a processor did not answer a clock interrupt in time"},
	{0x00000109, "CRITICAL_STRUCTURE_CORRUPTION", "kernel code or critical data was modified"},
	{0x00000116, "VIDEO_TDR_FAILURE", "the display driver did not recover from a timeout"},
	{0x00000124, "WHEA_UNCORRECTABLE_ERROR", "a fatal hardware error"},
	{0x0000012B, "FAULTY_HARDWARE_CORRUPTED_PAGE", "memory corruption from faulty hardware"},
	{0x00000133, "DPC_WATCHDOG_VIOLATION", "a DPC ran too long, or the system spent too long at DISPATCH_LEVEL"},
	{0x00000139, "KERNEL_SECURITY_CHECK_FAILURE", "the kernel detected a corrupt critical data structure"},
	{0x0000013A, "KERNEL_MODE_HEAP_CORRUPTION", "the kernel-mode heap manager detected corruption"},
	{0x00000144, "BUGCODE_USB3_DRIVER", "a USB 3 driver error"},
	{0x00000154, "UNEXPECTED_STORE_EXCEPTION", "the store component caught an unexpected exception"},
	{0x0000018B, "SECURE_KERNEL_ERROR", "the secure kernel hit a fatal error"},
	{0x000001CA, "SYNTHETIC_WATCHDOG_TIMEOUT", "a system-wide watchdog expired"},
	{0x00020001, "HYPERVISOR_ERROR", "the hypervisor hit a fatal error"},
	{0x1000007E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M", "as 0x7E"},
	{0x1000007F, "UNEXPECTED_KERNEL_MODE_TRAP_M", "as 0x7F"},
	{0x1000008E, "KERNEL_MODE_EXCEPTION_NOT_HANDLED_M", "as 0x8E"},
	{0x100000EA, "THREAD_STUCK_IN_DEVICE_DRIVER_M", "as 0xEA"},
	{0xC0000218, "STATUS_CANNOT_LOAD_REGISTRY_FILE", "a registry hive file could not be loaded"},
	{0xC000021A, "WINLOGON_FATAL_ERROR", "STATUS_SYSTEM_PROCESS_TERMINATED: Winlogon or the client-server runtime ended"},
	{0xC0000221, "STATUS_IMAGE_CHECKSUM_MISMATCH", "a driver or system DLL is corrupt"},
	{0xDEADDEAD, "MANUALLY_INITIATED_CRASH1", "a crash was started on purpose (debugger)"},
}

// Lookup returns what is known of code.
func Lookup(code uint32) (Info, bool) {
	i := sort.Search(len(table), func(i int) bool { return table[i].Code >= code })
	if i < len(table) && table[i].Code == code {
		return table[i], true
	}
	return Info{}, false
}

// Name is the symbolic name of code, or "" when it is not in the table.
func Name(code uint32) string {
	info, _ := Lookup(code)
	return info.Name
}

// Hex formats code as Microsoft writes it: 0x0000007B.
func Hex(code uint32) string { return fmt.Sprintf("0x%08X", code) }

// Short formats code the way stop screens and support tickets usually do: 0x7B.
func Short(code uint32) string { return fmt.Sprintf("0x%X", code) }

// Describe is the code and its name, e.g. "0x7B INACCESSIBLE_BOOT_DEVICE", or the code alone when
// the name is unknown.
func Describe(code uint32) string {
	if n := Name(code); n != "" {
		return Short(code) + " " + n
	}
	return Short(code)
}

// All returns the table, sorted by code.
func All() []Info { return append([]Info(nil), table...) }
