# Writes the crafted checkpoint entries of Fuzz/corpus/checkpoint from tiny.safetensors (run from the
# repository root): sealed (all three hashes), table swaps with only the old hashes recomputed, hash-valid
# hostile training states, non-finite weights. header_hash mirrors Checkpoint.headerHash.
import json, struct, hashlib, sys
src = 'Fuzz/corpus/checkpoint/tiny.safetensors'
b = open(src, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
header = json.loads(b[8:8 + n]); data = bytearray(b[8 + n:])

def header_hash(h):
    m = hashlib.sha256()
    def field(s):
        e = s.encode(); m.update(f"{len(e)}:".encode() + e)
    t = {k: v for k, v in h.items() if k != '__metadata__'}
    field(f"tensors {len(t)}")
    for name in sorted(t, key=lambda s: s.encode()):
        field(name); field("F32"); field(",".join(map(str, t[name]['shape'])))
        field("%d,%d" % tuple(t[name]['data_offsets']))
    meta = h['__metadata__']
    keys = [k for k in meta if k not in ('header_sha256', 'metadata_sha256')]
    field(f"metadata {len(keys)}")
    for k in sorted(keys, key=lambda s: s.encode()):
        field(k); field(meta[k])
    return m.hexdigest()

def seal(h, d, table=True):
    meta = h['__metadata__']
    meta['data_sha256'] = hashlib.sha256(d).hexdigest()
    if table: meta['header_sha256'] = header_hash(h)
    m = hashlib.sha256()
    for k in sorted(meta):
        if k != 'metadata_sha256': m.update(k.encode() + b'\0' + meta[k].encode() + b'\0')
    meta['metadata_sha256'] = m.hexdigest()

def write(name, h, d):
    j = json.dumps(h, sort_keys=True, separators=(',', ':')).encode()
    j += b' ' * ((8 - (8 + len(j)) % 8) % 8)
    open('Fuzz/corpus/checkpoint/' + name, 'wb').write(struct.pack('<Q', len(j)) + j + bytes(d))

def fresh():
    return json.loads(json.dumps(header)), bytearray(data)

h, d = fresh(); seal(h, d); write('sealed.safetensors', h, d)
# Table swaps after sealing, old hashes recomputed: only header_sha256 can tell.
def swap(h, a, c):
    h[a]['data_offsets'], h[c]['data_offsets'] = h[c]['data_offsets'], h[a]['data_offsets']
h, d = fresh(); seal(h, d); swap(h, 'layers.1.weight', 'layers.1.bias'); seal(h, d, table=False); write('swapped-table.safetensors', h, d)
h, d = fresh(); seal(h, d)
for k in [k for k in h if k.startswith('adam.m.')]: swap(h, k, 'adam.v.' + k[7:])
seal(h, d, table=False); write('swapped-adam.safetensors', h, d)
def state_edit(name, edit):
    h, d = fresh(); st = json.loads(h['__metadata__']['state']); edit(st)
    h['__metadata__']['state'] = json.dumps(st); seal(h, d); write(name, h, d)
state_edit('epoch-intmax.safetensors', lambda s: s.__setitem__('epoch', 9223372036854775807))
state_edit('negative-step.safetensors', lambda s: s.__setitem__('stepInEpoch', -1))
state_edit('normalizer-3-channels.safetensors', lambda s: s.__setitem__('normalizer', {'mean': [0.1, 0.2, 0.3], 'std': [1, 1, 1]}))
h, d = fresh(); d[0:4] = struct.pack('<f', float('nan')); d[8:12] = struct.pack('<f', float('inf')); seal(h, d); write('nonfinite-weights.safetensors', h, d)
