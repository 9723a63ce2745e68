#!/bin/sh
# /init of the sdmesh tiny test guest (busybox static, runs from the initramfs, no root fs).
#
# It reads its identity from the kernel command line, applies it, and reports it on the
# serial console as lines that start with "SDMESH-GUEST " so tests can grep the console log:
#   SDMESH-GUEST boot kernel=<release> uptime=<s>
#   SDMESH-GUEST net dev=eth0 mac=<mac> configured|none|error=<why>
#   SDMESH-GUEST disk name=vda bytes=<n> base=<label of the base image or empty>
#   SDMESH-GUEST hostname=<h> ip=<a> netmask=<m> gateway=<g>
#   SDMESH-GUEST param <key>=<value>            (each other sdmesh.* argument)
#   SDMESH-GUEST ready uptime=<s>
#
# Command line (first match wins, left to right in this list):
#   sdmesh.hostname=H sdmesh.ip=A[/P] sdmesh.netmask=M sdmesh.gateway=G sdmesh.dev=D
#   ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>  (kernel
#     syntax, static only: the Debian kernel has no IP_PNP, so we apply it ourselves;
#     "dhcp" and other autoconf modes are not supported and are reported as such)
#   hostname=H
# A missing netmask means 255.255.255.0. Values cannot contain spaces. IPv6 is disabled
# unless sdmesh.ipv6=1.
# The ACPI power button (virsh shutdown) powers the guest off at once.

export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp /run
exec </dev/console >/dev/console 2>&1

say() { echo "SDMESH-GUEST $*"; }
up() { cut -d' ' -f1 /proc/uptime; }

say "boot kernel=$(uname -r) uptime=$(up)"

# Drivers the Debian kernel builds as modules (virtio, power button), in dependency order.
if [ -f /lib/modules/load-order ]; then
  # shellcheck disable=SC2013 # one module name per word
  for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" 2>/dev/null || say "warn insmod=$m failed"
  done
fi

hn="" ip="" nm="" gw="" dev="" k_ip="" k_hn="" extras=""
s_hn="" s_ip="" s_nm="" s_gw="" s_dev=""
set -f # no globbing of command-line words
# shellcheck disable=SC2013 # the command line is split into words, like the kernel does
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    sdmesh.hostname=*) s_hn=${arg#*=} ;;
    sdmesh.ip=*) s_ip=${arg#*=} ;;
    sdmesh.netmask=*) s_nm=${arg#*=} ;;
    sdmesh.gateway=*) s_gw=${arg#*=} ;;
    sdmesh.dev=*) s_dev=${arg#*=} ;;
    sdmesh.*=*) extras="$extras $arg" ;;
    ip=*) k_ip=${arg#ip=} ;;
    hostname=*) k_hn=${arg#*=} ;;
  esac
done
set +f

# Kernel ip= syntax; empty fields are kept by read with IFS=:.
kc="" kg="" km="" kh="" kd=""
if [ -n "$k_ip" ]; then
  IFS=: read -r kc _ks kg km kh kd _ka _rest <<EOF
$k_ip
EOF
  case "$kc" in
    dhcp|on|any|bootp|rarp|both|off|none) say "warn ip=$kc autoconf not supported"; kc="" ;;
  esac
fi
hn=${s_hn:-${kh:-$k_hn}}
ip=${s_ip:-$kc}
nm=${s_nm:-$km}
gw=${s_gw:-$kg}
dev=${s_dev:-$kd}

[ -n "$hn" ] && hostname "$hn"

prefix=""
case "$ip" in
  */*) prefix=${ip#*/}; ip=${ip%/*}; [ -z "$nm" ] && nm=$(ipcalc -m "$ip/$prefix" | cut -d= -f2) ;;
esac
if [ -n "$ip" ]; then
  [ -z "$nm" ] && nm=255.255.255.0
  [ -z "$prefix" ] && prefix=$(ipcalc -p "$ip" "$nm" | cut -d= -f2)
fi

# Quiet by design: no IPv6 autoconf chatter (router/neighbour solicitations, MLD) on the NIC;
# with a static IPv4 address the guest sends nothing until asked. sdmesh.ipv6=1 keeps IPv6.
case " $extras " in
  *" sdmesh.ipv6=1 "*) ;;
  *) for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6; do
       [ -w "$f" ] && echo 1 >"$f"
     done ;;
esac
ip link set lo up 2>/dev/null
if [ -z "$dev" ]; then
  for d in /sys/class/net/*; do
    d=${d##*/}
    [ "$d" = lo ] || [ ! -e "/sys/class/net/$d" ] || { dev=$d; break; }
  done
fi
if [ -n "$dev" ] && [ -e "/sys/class/net/$dev" ]; then
  mac=$(cat "/sys/class/net/$dev/address")
  ip link set "$dev" up
  if [ -z "$ip" ]; then
    say "net dev=$dev mac=$mac unconfigured"
  elif ! ip addr add "$ip/$prefix" dev "$dev"; then
    say "net dev=$dev mac=$mac error=addr"
  elif [ -n "$gw" ] && ! ip route add default via "$gw" dev "$dev"; then
    say "net dev=$dev mac=$mac error=route"
  else
    say "net dev=$dev mac=$mac configured"
  fi
else
  say "net none"
fi

for b in /sys/block/vd* /sys/block/sd*; do
  [ -e "$b" ] || continue
  name=${b##*/}
  bytes=$(($(cat "$b/size") * 512))
  # The base image built by scripts/build-guest starts with a text label; an overlay shows it.
  label=$(dd if="/dev/$name" bs=64 count=1 2>/dev/null | head -n1 | tr -cd 'A-Za-z0-9._=-')
  case "$label" in SDMESH-BASE*) ;; *) label="" ;; esac
  say "disk name=$name bytes=$bytes base=$label"
done

say "hostname=$(hostname) ip=$ip netmask=$nm gateway=$gw"
for e in $extras; do say "param ${e#sdmesh.}"; done

# virsh shutdown presses the ACPI power button: any event from it powers off.
for ev in /sys/class/input/event*; do
  [ -e "$ev/device/name" ] || continue
  if grep -q "Power Button" "$ev/device/name"; then
    (dd if="/dev/input/${ev##*/}" bs=24 count=1 >/dev/null 2>&1 &&
      say "poweroff reason=acpi" && sync && poweroff -f) &
  fi
done

say "ready uptime=$(up)"
while :; do sleep 3600; done
