package winsim

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/bugcheck"
)

// Boot screenshot colours (BGR): the blue of Windows' stop screen and the dark logon screen.
var (
	stopBlue  = [3]byte{0xD7, 0x78, 0x00}
	logonDark = [3]byte{0x30, 0x20, 0x10}
)

// Screenshot size: small, the shape of a console.
const shotW, shotH = 64, 48

// bmp renders a solid-colour 24-bit bitmap.
func bmp(c [3]byte) []byte {
	row := (shotW*3 + 3) &^ 3
	size := 54 + row*shotH
	var b bytes.Buffer
	le := binary.LittleEndian
	b.WriteString("BM")
	_ = binary.Write(&b, le, uint32(size))
	_ = binary.Write(&b, le, uint32(0))
	_ = binary.Write(&b, le, uint32(54))
	_ = binary.Write(&b, le, uint32(40))
	_ = binary.Write(&b, le, int32(shotW))
	_ = binary.Write(&b, le, int32(shotH))
	_ = binary.Write(&b, le, uint16(1))
	_ = binary.Write(&b, le, uint16(24))
	_ = binary.Write(&b, le, [6]uint32{0, uint32(row * shotH), 2835, 2835, 0, 0})
	line := make([]byte, row)
	for x := range shotW {
		copy(line[x*3:], c[:])
	}
	for range shotH {
		b.Write(line)
	}
	return b.Bytes()
}

// emsOn reports whether the disk's boot store sends the boot manager and the default loader's
// output to the serial port (bootems and ems on), as patch sets them.
func emsOn(d *wintest.Disk) bool {
	store := d.BCDStore()
	if store == nil {
		return false
	}
	yes := func(v string) bool {
		switch strings.ToLower(v) {
		case "yes", "on", "true", "1":
			return true
		}
		return false
	}
	bootmgr, ok := agent.FindBCDEntry(store.Entries, agent.BCDBootMgr)
	if !ok {
		return false
	}
	loader, _, err := agent.ChooseLoader(store.Entries)
	if err != nil {
		return false
	}
	be, _ := bootmgr.Get("bootems")
	le, _ := loader.Get("ems")
	return yes(be) && yes(le)
}

// setBootDiagnostics shows the boot in the VM's boot diagnostics: the stop screen (crashed) or
// the logon screen, and a serial log that holds the Special Administration Console's output only
// when EMS is on, as on Azure (without EMS a Windows VM's serial log stays empty).
func (w *World) setBootDiagnostics(st *azsim.State, vmID string, win *Disk, crashed bool, code uint32) {
	var ems bool
	win.View(func(d *wintest.Disk) { ems = emsOn(d) })
	var log strings.Builder
	if ems {
		log.WriteString("\r\nComputer is booting, SAC started and initialized.\r\n\r\n" +
			"Use the \"ch -?\" command for information about using channels.\r\n" +
			"Use the \"?\" command for general help.\r\n\r\nSAC>\r\n")
		if crashed {
			p := bugCheckParameters(code)
			fmt.Fprintf(&log, "<?xml version=\"1.0\"?>\r\n<BP>\r\n<INSTANCE CLASSNAME=\"BLUESCREEN\">\r\n"+
				"<PROPERTY NAME=\"STOPCODE\" TYPE=\"string\"><VALUE>\"0x%X\"</VALUE></PROPERTY>"+
				"<PROPERTY NAME=\"STOPNAME\" TYPE=\"string\"><VALUE>\"%s\"</VALUE></PROPERTY>"+
				"<PROPERTY NAME=\"BUGCHECKPARAMETERS\" TYPE=\"string\"><VALUE>\"0x%X, 0x%X, 0x%X, 0x%X\"</VALUE></PROPERTY>"+
				"\r\n</INSTANCE>\r\n</BP>\r\n!SAC>\r\n", code, bugcheck.Name(code), p[0], p[1], p[2], p[3])
		}
	}
	shot := bmp(logonDark)
	if crashed {
		shot = bmp(stopBlue)
	}
	if err := st.SetBootDiagnostics(vmID, shot, []byte(log.String())); err != nil {
		w.log.Warn("winsim: boot diagnostics", "vm", vmID, "err", err)
	}
}
