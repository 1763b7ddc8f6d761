// node_modules/@msgpack/msgpack/dist.esm/utils/utf8.mjs
function utf8Count(str2) {
  const strLength = str2.length;
  let byteLength = 0;
  let pos = 0;
  while (pos < strLength) {
    let value = str2.charCodeAt(pos++);
    if ((value & 4294967168) === 0) {
      byteLength++;
      continue;
    } else if ((value & 4294965248) === 0) {
      byteLength += 2;
    } else {
      if (value >= 55296 && value <= 56319) {
        if (pos < strLength) {
          const extra = str2.charCodeAt(pos);
          if ((extra & 64512) === 56320) {
            ++pos;
            value = ((value & 1023) << 10) + (extra & 1023) + 65536;
          }
        }
      }
      if ((value & 4294901760) === 0) {
        byteLength += 3;
      } else {
        byteLength += 4;
      }
    }
  }
  return byteLength;
}
function utf8EncodeJs(str2, output, outputOffset) {
  const strLength = str2.length;
  let offset = outputOffset;
  let pos = 0;
  while (pos < strLength) {
    let value = str2.charCodeAt(pos++);
    if ((value & 4294967168) === 0) {
      output[offset++] = value;
      continue;
    } else if ((value & 4294965248) === 0) {
      output[offset++] = value >> 6 & 31 | 192;
    } else {
      if (value >= 55296 && value <= 56319) {
        if (pos < strLength) {
          const extra = str2.charCodeAt(pos);
          if ((extra & 64512) === 56320) {
            ++pos;
            value = ((value & 1023) << 10) + (extra & 1023) + 65536;
          }
        }
      }
      if ((value & 4294901760) === 0) {
        output[offset++] = value >> 12 & 15 | 224;
        output[offset++] = value >> 6 & 63 | 128;
      } else {
        output[offset++] = value >> 18 & 7 | 240;
        output[offset++] = value >> 12 & 63 | 128;
        output[offset++] = value >> 6 & 63 | 128;
      }
    }
    output[offset++] = value & 63 | 128;
  }
}
var sharedTextEncoder = new TextEncoder();
var TEXT_ENCODER_THRESHOLD = 50;
function utf8EncodeTE(str2, output, outputOffset) {
  sharedTextEncoder.encodeInto(str2, output.subarray(outputOffset));
}
function utf8Encode(str2, output, outputOffset) {
  if (str2.length > TEXT_ENCODER_THRESHOLD) {
    utf8EncodeTE(str2, output, outputOffset);
  } else {
    utf8EncodeJs(str2, output, outputOffset);
  }
}
var CHUNK_SIZE = 4096;
function utf8DecodeJs(bytes, inputOffset, byteLength) {
  let offset = inputOffset;
  const end = offset + byteLength;
  const units = [];
  let result = "";
  while (offset < end) {
    const byte1 = bytes[offset++];
    if ((byte1 & 128) === 0) {
      units.push(byte1);
    } else if ((byte1 & 224) === 192) {
      const byte2 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 6 | byte2);
    } else if ((byte1 & 240) === 224) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 12 | byte2 << 6 | byte3);
    } else if ((byte1 & 248) === 240) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      const byte4 = bytes[offset++] & 63;
      let unit = (byte1 & 7) << 18 | byte2 << 12 | byte3 << 6 | byte4;
      if (unit > 65535) {
        unit -= 65536;
        units.push(unit >>> 10 & 1023 | 55296);
        unit = 56320 | unit & 1023;
      }
      units.push(unit);
    } else {
      units.push(byte1);
    }
    if (units.length >= CHUNK_SIZE) {
      result += String.fromCharCode(...units);
      units.length = 0;
    }
  }
  if (units.length > 0) {
    result += String.fromCharCode(...units);
  }
  return result;
}
var sharedTextDecoder = new TextDecoder();
var TEXT_DECODER_THRESHOLD = 200;
function utf8DecodeTD(bytes, inputOffset, byteLength) {
  const stringBytes = bytes.subarray(inputOffset, inputOffset + byteLength);
  return sharedTextDecoder.decode(stringBytes);
}
function utf8Decode(bytes, inputOffset, byteLength) {
  if (byteLength > TEXT_DECODER_THRESHOLD) {
    return utf8DecodeTD(bytes, inputOffset, byteLength);
  } else {
    return utf8DecodeJs(bytes, inputOffset, byteLength);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/ExtData.mjs
var ExtData = class {
  type;
  data;
  constructor(type, data) {
    this.type = type;
    this.data = data;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/DecodeError.mjs
var DecodeError = class _DecodeError extends Error {
  constructor(message) {
    super(message);
    const proto = Object.create(_DecodeError.prototype);
    Object.setPrototypeOf(this, proto);
    Object.defineProperty(this, "name", {
      configurable: true,
      enumerable: false,
      value: _DecodeError.name
    });
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/int.mjs
var UINT32_MAX = 4294967295;
function setUint64(view, offset, value) {
  const high = value / 4294967296;
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function setInt64(view, offset, value) {
  const high = Math.floor(value / 4294967296);
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function getInt64(view, offset) {
  const high = view.getInt32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}
function getUint64(view, offset) {
  const high = view.getUint32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}

// node_modules/@msgpack/msgpack/dist.esm/timestamp.mjs
var EXT_TIMESTAMP = -1;
var TIMESTAMP32_MAX_SEC = 4294967296 - 1;
var TIMESTAMP64_MAX_SEC = 17179869184 - 1;
function encodeTimeSpecToTimestamp({ sec, nsec }) {
  if (sec >= 0 && nsec >= 0 && sec <= TIMESTAMP64_MAX_SEC) {
    if (nsec === 0 && sec <= TIMESTAMP32_MAX_SEC) {
      const rv = new Uint8Array(4);
      const view = new DataView(rv.buffer);
      view.setUint32(0, sec);
      return rv;
    } else {
      const secHigh = sec / 4294967296;
      const secLow = sec & 4294967295;
      const rv = new Uint8Array(8);
      const view = new DataView(rv.buffer);
      view.setUint32(0, nsec << 2 | secHigh & 3);
      view.setUint32(4, secLow);
      return rv;
    }
  } else {
    const rv = new Uint8Array(12);
    const view = new DataView(rv.buffer);
    view.setUint32(0, nsec);
    setInt64(view, 4, sec);
    return rv;
  }
}
function encodeDateToTimeSpec(date) {
  const msec = date.getTime();
  const sec = Math.floor(msec / 1e3);
  const nsec = (msec - sec * 1e3) * 1e6;
  const nsecInSec = Math.floor(nsec / 1e9);
  return {
    sec: sec + nsecInSec,
    nsec: nsec - nsecInSec * 1e9
  };
}
function encodeTimestampExtension(object) {
  if (object instanceof Date) {
    const timeSpec = encodeDateToTimeSpec(object);
    return encodeTimeSpecToTimestamp(timeSpec);
  } else {
    return null;
  }
}
function decodeTimestampToTimeSpec(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (data.byteLength) {
    case 4: {
      const sec = view.getUint32(0);
      const nsec = 0;
      return { sec, nsec };
    }
    case 8: {
      const nsec30AndSecHigh2 = view.getUint32(0);
      const secLow32 = view.getUint32(4);
      const sec = (nsec30AndSecHigh2 & 3) * 4294967296 + secLow32;
      const nsec = nsec30AndSecHigh2 >>> 2;
      return { sec, nsec };
    }
    case 12: {
      const sec = getInt64(view, 4);
      const nsec = view.getUint32(0);
      return { sec, nsec };
    }
    default:
      throw new DecodeError(`Unrecognized data size for timestamp (expected 4, 8, or 12): ${data.length}`);
  }
}
function decodeTimestampExtension(data) {
  const timeSpec = decodeTimestampToTimeSpec(data);
  return new Date(timeSpec.sec * 1e3 + timeSpec.nsec / 1e6);
}
var timestampExtension = {
  type: EXT_TIMESTAMP,
  encode: encodeTimestampExtension,
  decode: decodeTimestampExtension
};

// node_modules/@msgpack/msgpack/dist.esm/ExtensionCodec.mjs
var ExtensionCodec = class _ExtensionCodec {
  static defaultCodec = new _ExtensionCodec();
  // ensures ExtensionCodecType<X> matches ExtensionCodec<X>
  // this will make type errors a lot more clear
  // eslint-disable-next-line @typescript-eslint/naming-convention
  __brand;
  // built-in extensions
  builtInEncoders = [];
  builtInDecoders = [];
  // custom extensions
  encoders = [];
  decoders = [];
  constructor() {
    this.register(timestampExtension);
  }
  register({ type, encode: encode2, decode: decode2 }) {
    if (type >= 0) {
      this.encoders[type] = encode2;
      this.decoders[type] = decode2;
    } else {
      const index = -1 - type;
      this.builtInEncoders[index] = encode2;
      this.builtInDecoders[index] = decode2;
    }
  }
  tryToEncode(object, context) {
    for (let i = 0; i < this.builtInEncoders.length; i++) {
      const encodeExt = this.builtInEncoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = -1 - i;
          return new ExtData(type, data);
        }
      }
    }
    for (let i = 0; i < this.encoders.length; i++) {
      const encodeExt = this.encoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = i;
          return new ExtData(type, data);
        }
      }
    }
    if (object instanceof ExtData) {
      return object;
    }
    return null;
  }
  decode(data, type, context) {
    const decodeExt = type < 0 ? this.builtInDecoders[-1 - type] : this.decoders[type];
    if (decodeExt) {
      return decodeExt(data, type, context);
    } else {
      return new ExtData(type, data);
    }
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/typedArrays.mjs
function isArrayBufferLike(buffer) {
  return buffer instanceof ArrayBuffer || typeof SharedArrayBuffer !== "undefined" && buffer instanceof SharedArrayBuffer;
}
function ensureUint8Array(buffer) {
  if (buffer instanceof Uint8Array) {
    return buffer;
  } else if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } else if (isArrayBufferLike(buffer)) {
    return new Uint8Array(buffer);
  } else {
    return Uint8Array.from(buffer);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/Encoder.mjs
var DEFAULT_MAX_DEPTH = 100;
var DEFAULT_INITIAL_BUFFER_SIZE = 2048;
var Encoder = class _Encoder {
  extensionCodec;
  context;
  useBigInt64;
  maxDepth;
  initialBufferSize;
  sortKeys;
  forceFloat32;
  ignoreUndefined;
  forceIntegerToFloat;
  pos;
  view;
  bytes;
  entered = false;
  constructor(options) {
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.maxDepth = options?.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.initialBufferSize = options?.initialBufferSize ?? DEFAULT_INITIAL_BUFFER_SIZE;
    this.sortKeys = options?.sortKeys ?? false;
    this.forceFloat32 = options?.forceFloat32 ?? false;
    this.ignoreUndefined = options?.ignoreUndefined ?? false;
    this.forceIntegerToFloat = options?.forceIntegerToFloat ?? false;
    this.pos = 0;
    this.view = new DataView(new ArrayBuffer(this.initialBufferSize));
    this.bytes = new Uint8Array(this.view.buffer);
  }
  clone() {
    return new _Encoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      maxDepth: this.maxDepth,
      initialBufferSize: this.initialBufferSize,
      sortKeys: this.sortKeys,
      forceFloat32: this.forceFloat32,
      ignoreUndefined: this.ignoreUndefined,
      forceIntegerToFloat: this.forceIntegerToFloat
    });
  }
  reinitializeState() {
    this.pos = 0;
  }
  /**
   * This is almost equivalent to {@link Encoder#encode}, but it returns an reference of the encoder's internal buffer and thus much faster than {@link Encoder#encode}.
   *
   * @returns Encodes the object and returns a shared reference the encoder's internal buffer.
   */
  encodeSharedRef(object) {
    if (this.entered) {
      const instance = this.clone();
      return instance.encodeSharedRef(object);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.doEncode(object, 1);
      return this.bytes.subarray(0, this.pos);
    } finally {
      this.entered = false;
    }
  }
  /**
   * @returns Encodes the object and returns a copy of the encoder's internal buffer.
   */
  encode(object) {
    if (this.entered) {
      const instance = this.clone();
      return instance.encode(object);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.doEncode(object, 1);
      return this.bytes.slice(0, this.pos);
    } finally {
      this.entered = false;
    }
  }
  doEncode(object, depth) {
    if (depth > this.maxDepth) {
      throw new Error(`Too deep objects in depth ${depth}`);
    }
    if (object == null) {
      this.encodeNil();
    } else if (typeof object === "boolean") {
      this.encodeBoolean(object);
    } else if (typeof object === "number") {
      if (!this.forceIntegerToFloat) {
        this.encodeNumber(object);
      } else {
        this.encodeNumberAsFloat(object);
      }
    } else if (typeof object === "string") {
      this.encodeString(object);
    } else if (this.useBigInt64 && typeof object === "bigint") {
      this.encodeBigInt64(object);
    } else {
      this.encodeObject(object, depth);
    }
  }
  ensureBufferSizeToWrite(sizeToWrite) {
    const requiredSize = this.pos + sizeToWrite;
    if (this.view.byteLength < requiredSize) {
      this.resizeBuffer(requiredSize * 2);
    }
  }
  resizeBuffer(newSize) {
    const newBuffer = new ArrayBuffer(newSize);
    const newBytes = new Uint8Array(newBuffer);
    const newView = new DataView(newBuffer);
    newBytes.set(this.bytes);
    this.view = newView;
    this.bytes = newBytes;
  }
  encodeNil() {
    this.writeU8(192);
  }
  encodeBoolean(object) {
    if (object === false) {
      this.writeU8(194);
    } else {
      this.writeU8(195);
    }
  }
  encodeNumber(object) {
    if (!this.forceIntegerToFloat && Number.isSafeInteger(object)) {
      if (object >= 0) {
        if (object < 128) {
          this.writeU8(object);
        } else if (object < 256) {
          this.writeU8(204);
          this.writeU8(object);
        } else if (object < 65536) {
          this.writeU8(205);
          this.writeU16(object);
        } else if (object < 4294967296) {
          this.writeU8(206);
          this.writeU32(object);
        } else if (!this.useBigInt64) {
          this.writeU8(207);
          this.writeU64(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      } else {
        if (object >= -32) {
          this.writeU8(224 | object + 32);
        } else if (object >= -128) {
          this.writeU8(208);
          this.writeI8(object);
        } else if (object >= -32768) {
          this.writeU8(209);
          this.writeI16(object);
        } else if (object >= -2147483648) {
          this.writeU8(210);
          this.writeI32(object);
        } else if (!this.useBigInt64) {
          this.writeU8(211);
          this.writeI64(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      }
    } else {
      this.encodeNumberAsFloat(object);
    }
  }
  encodeNumberAsFloat(object) {
    if (this.forceFloat32) {
      this.writeU8(202);
      this.writeF32(object);
    } else {
      this.writeU8(203);
      this.writeF64(object);
    }
  }
  encodeBigInt64(object) {
    if (object >= BigInt(0)) {
      this.writeU8(207);
      this.writeBigUint64(object);
    } else {
      this.writeU8(211);
      this.writeBigInt64(object);
    }
  }
  writeStringHeader(byteLength) {
    if (byteLength < 32) {
      this.writeU8(160 + byteLength);
    } else if (byteLength < 256) {
      this.writeU8(217);
      this.writeU8(byteLength);
    } else if (byteLength < 65536) {
      this.writeU8(218);
      this.writeU16(byteLength);
    } else if (byteLength < 4294967296) {
      this.writeU8(219);
      this.writeU32(byteLength);
    } else {
      throw new Error(`Too long string: ${byteLength} bytes in UTF-8`);
    }
  }
  encodeString(object) {
    const maxHeaderSize = 1 + 4;
    const byteLength = utf8Count(object);
    this.ensureBufferSizeToWrite(maxHeaderSize + byteLength);
    this.writeStringHeader(byteLength);
    utf8Encode(object, this.bytes, this.pos);
    this.pos += byteLength;
  }
  encodeObject(object, depth) {
    const ext = this.extensionCodec.tryToEncode(object, this.context);
    if (ext != null) {
      this.encodeExtension(ext);
    } else if (Array.isArray(object)) {
      this.encodeArray(object, depth);
    } else if (ArrayBuffer.isView(object)) {
      this.encodeBinary(object);
    } else if (typeof object === "object") {
      this.encodeMap(object, depth);
    } else {
      throw new Error(`Unrecognized object: ${Object.prototype.toString.apply(object)}`);
    }
  }
  encodeBinary(object) {
    const size = object.byteLength;
    if (size < 256) {
      this.writeU8(196);
      this.writeU8(size);
    } else if (size < 65536) {
      this.writeU8(197);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(198);
      this.writeU32(size);
    } else {
      throw new Error(`Too large binary: ${size}`);
    }
    const bytes = ensureUint8Array(object);
    this.writeU8a(bytes);
  }
  encodeArray(object, depth) {
    const size = object.length;
    if (size < 16) {
      this.writeU8(144 + size);
    } else if (size < 65536) {
      this.writeU8(220);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(221);
      this.writeU32(size);
    } else {
      throw new Error(`Too large array: ${size}`);
    }
    for (const item of object) {
      this.doEncode(item, depth + 1);
    }
  }
  countWithoutUndefined(object, keys) {
    let count = 0;
    for (const key of keys) {
      if (object[key] !== void 0) {
        count++;
      }
    }
    return count;
  }
  encodeMap(object, depth) {
    const keys = Object.keys(object);
    if (this.sortKeys) {
      keys.sort();
    }
    const size = this.ignoreUndefined ? this.countWithoutUndefined(object, keys) : keys.length;
    if (size < 16) {
      this.writeU8(128 + size);
    } else if (size < 65536) {
      this.writeU8(222);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(223);
      this.writeU32(size);
    } else {
      throw new Error(`Too large map object: ${size}`);
    }
    for (const key of keys) {
      const value = object[key];
      if (!(this.ignoreUndefined && value === void 0)) {
        this.encodeString(key);
        this.doEncode(value, depth + 1);
      }
    }
  }
  encodeExtension(ext) {
    if (typeof ext.data === "function") {
      const data = ext.data(this.pos + 6);
      const size2 = data.length;
      if (size2 >= 4294967296) {
        throw new Error(`Too large extension object: ${size2}`);
      }
      this.writeU8(201);
      this.writeU32(size2);
      this.writeI8(ext.type);
      this.writeU8a(data);
      return;
    }
    const size = ext.data.length;
    if (size === 1) {
      this.writeU8(212);
    } else if (size === 2) {
      this.writeU8(213);
    } else if (size === 4) {
      this.writeU8(214);
    } else if (size === 8) {
      this.writeU8(215);
    } else if (size === 16) {
      this.writeU8(216);
    } else if (size < 256) {
      this.writeU8(199);
      this.writeU8(size);
    } else if (size < 65536) {
      this.writeU8(200);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(201);
      this.writeU32(size);
    } else {
      throw new Error(`Too large extension object: ${size}`);
    }
    this.writeI8(ext.type);
    this.writeU8a(ext.data);
  }
  writeU8(value) {
    this.ensureBufferSizeToWrite(1);
    this.view.setUint8(this.pos, value);
    this.pos++;
  }
  writeU8a(values) {
    const size = values.length;
    this.ensureBufferSizeToWrite(size);
    this.bytes.set(values, this.pos);
    this.pos += size;
  }
  writeI8(value) {
    this.ensureBufferSizeToWrite(1);
    this.view.setInt8(this.pos, value);
    this.pos++;
  }
  writeU16(value) {
    this.ensureBufferSizeToWrite(2);
    this.view.setUint16(this.pos, value);
    this.pos += 2;
  }
  writeI16(value) {
    this.ensureBufferSizeToWrite(2);
    this.view.setInt16(this.pos, value);
    this.pos += 2;
  }
  writeU32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setUint32(this.pos, value);
    this.pos += 4;
  }
  writeI32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setInt32(this.pos, value);
    this.pos += 4;
  }
  writeF32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setFloat32(this.pos, value);
    this.pos += 4;
  }
  writeF64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setFloat64(this.pos, value);
    this.pos += 8;
  }
  writeU64(value) {
    this.ensureBufferSizeToWrite(8);
    setUint64(this.view, this.pos, value);
    this.pos += 8;
  }
  writeI64(value) {
    this.ensureBufferSizeToWrite(8);
    setInt64(this.view, this.pos, value);
    this.pos += 8;
  }
  writeBigUint64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setBigUint64(this.pos, value);
    this.pos += 8;
  }
  writeBigInt64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setBigInt64(this.pos, value);
    this.pos += 8;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/encode.mjs
function encode(value, options) {
  const encoder2 = new Encoder(options);
  return encoder2.encodeSharedRef(value);
}

// node_modules/@msgpack/msgpack/dist.esm/utils/prettyByte.mjs
function prettyByte(byte) {
  return `${byte < 0 ? "-" : ""}0x${Math.abs(byte).toString(16).padStart(2, "0")}`;
}

// node_modules/@msgpack/msgpack/dist.esm/CachedKeyDecoder.mjs
var DEFAULT_MAX_KEY_LENGTH = 16;
var DEFAULT_MAX_LENGTH_PER_KEY = 16;
var CachedKeyDecoder = class {
  hit = 0;
  miss = 0;
  caches;
  maxKeyLength;
  maxLengthPerKey;
  constructor(maxKeyLength = DEFAULT_MAX_KEY_LENGTH, maxLengthPerKey = DEFAULT_MAX_LENGTH_PER_KEY) {
    this.maxKeyLength = maxKeyLength;
    this.maxLengthPerKey = maxLengthPerKey;
    this.caches = [];
    for (let i = 0; i < this.maxKeyLength; i++) {
      this.caches.push([]);
    }
  }
  canBeCached(byteLength) {
    return byteLength > 0 && byteLength <= this.maxKeyLength;
  }
  find(bytes, inputOffset, byteLength) {
    const records = this.caches[byteLength - 1];
    FIND_CHUNK: for (const record of records) {
      const recordBytes = record.bytes;
      for (let j = 0; j < byteLength; j++) {
        if (recordBytes[j] !== bytes[inputOffset + j]) {
          continue FIND_CHUNK;
        }
      }
      return record.str;
    }
    return null;
  }
  store(bytes, value) {
    const records = this.caches[bytes.length - 1];
    const record = { bytes, str: value };
    if (records.length >= this.maxLengthPerKey) {
      records[Math.random() * records.length | 0] = record;
    } else {
      records.push(record);
    }
  }
  decode(bytes, inputOffset, byteLength) {
    const cachedValue = this.find(bytes, inputOffset, byteLength);
    if (cachedValue != null) {
      this.hit++;
      return cachedValue;
    }
    this.miss++;
    const str2 = utf8DecodeJs(bytes, inputOffset, byteLength);
    const slicedCopyOfBytes = Uint8Array.prototype.slice.call(bytes, inputOffset, inputOffset + byteLength);
    this.store(slicedCopyOfBytes, str2);
    return str2;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/Decoder.mjs
var STATE_ARRAY = "array";
var STATE_MAP_KEY = "map_key";
var STATE_MAP_VALUE = "map_value";
var mapKeyConverter = (key) => {
  if (typeof key === "string" || typeof key === "number") {
    return key;
  }
  throw new DecodeError("The type of key must be string or number but " + typeof key);
};
var StackPool = class {
  stack = [];
  stackHeadPosition = -1;
  get length() {
    return this.stackHeadPosition + 1;
  }
  top() {
    return this.stack[this.stackHeadPosition];
  }
  pushArrayState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_ARRAY;
    state.position = 0;
    state.size = size;
    state.array = new Array(size);
  }
  pushMapState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_MAP_KEY;
    state.readCount = 0;
    state.size = size;
    state.map = {};
  }
  getUninitializedStateFromPool() {
    this.stackHeadPosition++;
    if (this.stackHeadPosition === this.stack.length) {
      const partialState = {
        type: void 0,
        size: 0,
        array: void 0,
        position: 0,
        readCount: 0,
        map: void 0,
        key: null
      };
      this.stack.push(partialState);
    }
    return this.stack[this.stackHeadPosition];
  }
  release(state) {
    const topStackState = this.stack[this.stackHeadPosition];
    if (topStackState !== state) {
      throw new Error("Invalid stack state. Released state is not on top of the stack.");
    }
    if (state.type === STATE_ARRAY) {
      const partialState = state;
      partialState.size = 0;
      partialState.array = void 0;
      partialState.position = 0;
      partialState.type = void 0;
    }
    if (state.type === STATE_MAP_KEY || state.type === STATE_MAP_VALUE) {
      const partialState = state;
      partialState.size = 0;
      partialState.map = void 0;
      partialState.readCount = 0;
      partialState.type = void 0;
    }
    this.stackHeadPosition--;
  }
  reset() {
    this.stack.length = 0;
    this.stackHeadPosition = -1;
  }
};
var HEAD_BYTE_REQUIRED = -1;
var EMPTY_VIEW = new DataView(new ArrayBuffer(0));
var EMPTY_BYTES = new Uint8Array(EMPTY_VIEW.buffer);
try {
  EMPTY_VIEW.getInt8(0);
} catch (e) {
  if (!(e instanceof RangeError)) {
    throw new Error("This module is not supported in the current JavaScript engine because DataView does not throw RangeError on out-of-bounds access");
  }
}
var MORE_DATA = new RangeError("Insufficient data");
var sharedCachedKeyDecoder = new CachedKeyDecoder();
var Decoder = class _Decoder {
  extensionCodec;
  context;
  useBigInt64;
  rawStrings;
  maxStrLength;
  maxBinLength;
  maxArrayLength;
  maxMapLength;
  maxExtLength;
  keyDecoder;
  mapKeyConverter;
  totalPos = 0;
  pos = 0;
  view = EMPTY_VIEW;
  bytes = EMPTY_BYTES;
  headByte = HEAD_BYTE_REQUIRED;
  stack = new StackPool();
  entered = false;
  constructor(options) {
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.rawStrings = options?.rawStrings ?? false;
    this.maxStrLength = options?.maxStrLength ?? UINT32_MAX;
    this.maxBinLength = options?.maxBinLength ?? UINT32_MAX;
    this.maxArrayLength = options?.maxArrayLength ?? UINT32_MAX;
    this.maxMapLength = options?.maxMapLength ?? UINT32_MAX;
    this.maxExtLength = options?.maxExtLength ?? UINT32_MAX;
    this.keyDecoder = options?.keyDecoder !== void 0 ? options.keyDecoder : sharedCachedKeyDecoder;
    this.mapKeyConverter = options?.mapKeyConverter ?? mapKeyConverter;
  }
  clone() {
    return new _Decoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      rawStrings: this.rawStrings,
      maxStrLength: this.maxStrLength,
      maxBinLength: this.maxBinLength,
      maxArrayLength: this.maxArrayLength,
      maxMapLength: this.maxMapLength,
      maxExtLength: this.maxExtLength,
      keyDecoder: this.keyDecoder
    });
  }
  reinitializeState() {
    this.totalPos = 0;
    this.headByte = HEAD_BYTE_REQUIRED;
    this.stack.reset();
  }
  setBuffer(buffer) {
    const bytes = ensureUint8Array(buffer);
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  appendBuffer(buffer) {
    if (this.headByte === HEAD_BYTE_REQUIRED && !this.hasRemaining(1)) {
      this.setBuffer(buffer);
    } else {
      const remainingData = this.bytes.subarray(this.pos);
      const newData = ensureUint8Array(buffer);
      const newBuffer = new Uint8Array(remainingData.length + newData.length);
      newBuffer.set(remainingData);
      newBuffer.set(newData, remainingData.length);
      this.setBuffer(newBuffer);
    }
  }
  hasRemaining(size) {
    return this.view.byteLength - this.pos >= size;
  }
  createExtraByteError(posToShow) {
    const { view, pos } = this;
    return new RangeError(`Extra ${view.byteLength - pos} of ${view.byteLength} byte(s) found at buffer[${posToShow}]`);
  }
  /**
   * @throws {@link DecodeError}
   * @throws {@link RangeError}
   */
  decode(buffer) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decode(buffer);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      const object = this.doDecodeSync();
      if (this.hasRemaining(1)) {
        throw this.createExtraByteError(this.pos);
      }
      return object;
    } finally {
      this.entered = false;
    }
  }
  *decodeMulti(buffer) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMulti(buffer);
      return;
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      while (this.hasRemaining(1)) {
        yield this.doDecodeSync();
      }
    } finally {
      this.entered = false;
    }
  }
  async decodeAsync(stream) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decodeAsync(stream);
    }
    try {
      this.entered = true;
      let decoded = false;
      let object;
      for await (const buffer of stream) {
        if (decoded) {
          this.entered = false;
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        try {
          object = this.doDecodeSync();
          decoded = true;
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
      if (decoded) {
        if (this.hasRemaining(1)) {
          throw this.createExtraByteError(this.totalPos);
        }
        return object;
      }
      const { headByte, pos, totalPos } = this;
      throw new RangeError(`Insufficient data in parsing ${prettyByte(headByte)} at ${totalPos} (${pos} in the current buffer)`);
    } finally {
      this.entered = false;
    }
  }
  decodeArrayStream(stream) {
    return this.decodeMultiAsync(stream, true);
  }
  decodeStream(stream) {
    return this.decodeMultiAsync(stream, false);
  }
  async *decodeMultiAsync(stream, isArray) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMultiAsync(stream, isArray);
      return;
    }
    try {
      this.entered = true;
      let isArrayHeaderRequired = isArray;
      let arrayItemsLeft = -1;
      for await (const buffer of stream) {
        if (isArray && arrayItemsLeft === 0) {
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        if (isArrayHeaderRequired) {
          arrayItemsLeft = this.readArraySize();
          isArrayHeaderRequired = false;
          this.complete();
        }
        try {
          while (true) {
            yield this.doDecodeSync();
            if (--arrayItemsLeft === 0) {
              break;
            }
          }
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
    } finally {
      this.entered = false;
    }
  }
  doDecodeSync() {
    DECODE: while (true) {
      const headByte = this.readHeadByte();
      let object;
      if (headByte >= 224) {
        object = headByte - 256;
      } else if (headByte < 192) {
        if (headByte < 128) {
          object = headByte;
        } else if (headByte < 144) {
          const size = headByte - 128;
          if (size !== 0) {
            this.pushMapState(size);
            this.complete();
            continue DECODE;
          } else {
            object = {};
          }
        } else if (headByte < 160) {
          const size = headByte - 144;
          if (size !== 0) {
            this.pushArrayState(size);
            this.complete();
            continue DECODE;
          } else {
            object = [];
          }
        } else {
          const byteLength = headByte - 160;
          object = this.decodeString(byteLength, 0);
        }
      } else if (headByte === 192) {
        object = null;
      } else if (headByte === 194) {
        object = false;
      } else if (headByte === 195) {
        object = true;
      } else if (headByte === 202) {
        object = this.readF32();
      } else if (headByte === 203) {
        object = this.readF64();
      } else if (headByte === 204) {
        object = this.readU8();
      } else if (headByte === 205) {
        object = this.readU16();
      } else if (headByte === 206) {
        object = this.readU32();
      } else if (headByte === 207) {
        if (this.useBigInt64) {
          object = this.readU64AsBigInt();
        } else {
          object = this.readU64();
        }
      } else if (headByte === 208) {
        object = this.readI8();
      } else if (headByte === 209) {
        object = this.readI16();
      } else if (headByte === 210) {
        object = this.readI32();
      } else if (headByte === 211) {
        if (this.useBigInt64) {
          object = this.readI64AsBigInt();
        } else {
          object = this.readI64();
        }
      } else if (headByte === 217) {
        const byteLength = this.lookU8();
        object = this.decodeString(byteLength, 1);
      } else if (headByte === 218) {
        const byteLength = this.lookU16();
        object = this.decodeString(byteLength, 2);
      } else if (headByte === 219) {
        const byteLength = this.lookU32();
        object = this.decodeString(byteLength, 4);
      } else if (headByte === 220) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 221) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 222) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 223) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 196) {
        const size = this.lookU8();
        object = this.decodeBinary(size, 1);
      } else if (headByte === 197) {
        const size = this.lookU16();
        object = this.decodeBinary(size, 2);
      } else if (headByte === 198) {
        const size = this.lookU32();
        object = this.decodeBinary(size, 4);
      } else if (headByte === 212) {
        object = this.decodeExtension(1, 0);
      } else if (headByte === 213) {
        object = this.decodeExtension(2, 0);
      } else if (headByte === 214) {
        object = this.decodeExtension(4, 0);
      } else if (headByte === 215) {
        object = this.decodeExtension(8, 0);
      } else if (headByte === 216) {
        object = this.decodeExtension(16, 0);
      } else if (headByte === 199) {
        const size = this.lookU8();
        object = this.decodeExtension(size, 1);
      } else if (headByte === 200) {
        const size = this.lookU16();
        object = this.decodeExtension(size, 2);
      } else if (headByte === 201) {
        const size = this.lookU32();
        object = this.decodeExtension(size, 4);
      } else {
        throw new DecodeError(`Unrecognized type byte: ${prettyByte(headByte)}`);
      }
      this.complete();
      const stack = this.stack;
      while (stack.length > 0) {
        const state = stack.top();
        if (state.type === STATE_ARRAY) {
          state.array[state.position] = object;
          state.position++;
          if (state.position === state.size) {
            object = state.array;
            stack.release(state);
          } else {
            continue DECODE;
          }
        } else if (state.type === STATE_MAP_KEY) {
          if (object === "__proto__") {
            throw new DecodeError("The key __proto__ is not allowed");
          }
          state.key = this.mapKeyConverter(object);
          state.type = STATE_MAP_VALUE;
          continue DECODE;
        } else {
          state.map[state.key] = object;
          state.readCount++;
          if (state.readCount === state.size) {
            object = state.map;
            stack.release(state);
          } else {
            state.key = null;
            state.type = STATE_MAP_KEY;
            continue DECODE;
          }
        }
      }
      return object;
    }
  }
  readHeadByte() {
    if (this.headByte === HEAD_BYTE_REQUIRED) {
      this.headByte = this.readU8();
    }
    return this.headByte;
  }
  complete() {
    this.headByte = HEAD_BYTE_REQUIRED;
  }
  readArraySize() {
    const headByte = this.readHeadByte();
    switch (headByte) {
      case 220:
        return this.readU16();
      case 221:
        return this.readU32();
      default: {
        if (headByte < 160) {
          return headByte - 144;
        } else {
          throw new DecodeError(`Unrecognized array type byte: ${prettyByte(headByte)}`);
        }
      }
    }
  }
  pushMapState(size) {
    if (size > this.maxMapLength) {
      throw new DecodeError(`Max length exceeded: map length (${size}) > maxMapLengthLength (${this.maxMapLength})`);
    }
    this.stack.pushMapState(size);
  }
  pushArrayState(size) {
    if (size > this.maxArrayLength) {
      throw new DecodeError(`Max length exceeded: array length (${size}) > maxArrayLength (${this.maxArrayLength})`);
    }
    this.stack.pushArrayState(size);
  }
  decodeString(byteLength, headerOffset) {
    if (!this.rawStrings || this.stateIsMapKey()) {
      return this.decodeUtf8String(byteLength, headerOffset);
    }
    return this.decodeBinary(byteLength, headerOffset);
  }
  /**
   * @throws {@link RangeError}
   */
  decodeUtf8String(byteLength, headerOffset) {
    if (byteLength > this.maxStrLength) {
      throw new DecodeError(`Max length exceeded: UTF-8 byte length (${byteLength}) > maxStrLength (${this.maxStrLength})`);
    }
    if (this.bytes.byteLength < this.pos + headerOffset + byteLength) {
      throw MORE_DATA;
    }
    const offset = this.pos + headerOffset;
    let object;
    if (this.stateIsMapKey() && this.keyDecoder?.canBeCached(byteLength)) {
      object = this.keyDecoder.decode(this.bytes, offset, byteLength);
    } else {
      object = utf8Decode(this.bytes, offset, byteLength);
    }
    this.pos += headerOffset + byteLength;
    return object;
  }
  stateIsMapKey() {
    if (this.stack.length > 0) {
      const state = this.stack.top();
      return state.type === STATE_MAP_KEY;
    }
    return false;
  }
  /**
   * @throws {@link RangeError}
   */
  decodeBinary(byteLength, headOffset) {
    if (byteLength > this.maxBinLength) {
      throw new DecodeError(`Max length exceeded: bin length (${byteLength}) > maxBinLength (${this.maxBinLength})`);
    }
    if (!this.hasRemaining(byteLength + headOffset)) {
      throw MORE_DATA;
    }
    const offset = this.pos + headOffset;
    const object = this.bytes.subarray(offset, offset + byteLength);
    this.pos += headOffset + byteLength;
    return object;
  }
  decodeExtension(size, headOffset) {
    if (size > this.maxExtLength) {
      throw new DecodeError(`Max length exceeded: ext length (${size}) > maxExtLength (${this.maxExtLength})`);
    }
    const extType = this.view.getInt8(this.pos + headOffset);
    const data = this.decodeBinary(
      size,
      headOffset + 1
      /* extType */
    );
    return this.extensionCodec.decode(data, extType, this.context);
  }
  lookU8() {
    return this.view.getUint8(this.pos);
  }
  lookU16() {
    return this.view.getUint16(this.pos);
  }
  lookU32() {
    return this.view.getUint32(this.pos);
  }
  readU8() {
    const value = this.view.getUint8(this.pos);
    this.pos++;
    return value;
  }
  readI8() {
    const value = this.view.getInt8(this.pos);
    this.pos++;
    return value;
  }
  readU16() {
    const value = this.view.getUint16(this.pos);
    this.pos += 2;
    return value;
  }
  readI16() {
    const value = this.view.getInt16(this.pos);
    this.pos += 2;
    return value;
  }
  readU32() {
    const value = this.view.getUint32(this.pos);
    this.pos += 4;
    return value;
  }
  readI32() {
    const value = this.view.getInt32(this.pos);
    this.pos += 4;
    return value;
  }
  readU64() {
    const value = getUint64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readI64() {
    const value = getInt64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readU64AsBigInt() {
    const value = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return value;
  }
  readI64AsBigInt() {
    const value = this.view.getBigInt64(this.pos);
    this.pos += 8;
    return value;
  }
  readF32() {
    const value = this.view.getFloat32(this.pos);
    this.pos += 4;
    return value;
  }
  readF64() {
    const value = this.view.getFloat64(this.pos);
    this.pos += 8;
    return value;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/decode.mjs
function decode(buffer, options) {
  const decoder = new Decoder(options);
  return decoder.decode(buffer);
}

// node_modules/@noble/hashes/_u64.js
var fromNumH = (n) => n / 2 ** 32 | 0;
var fromNumL = (n) => n >>> 0;

// node_modules/@noble/hashes/utils.js
function isBytes(a) {
  return a instanceof Uint8Array || ArrayBuffer.isView(a) && a.constructor.name === "Uint8Array" && "BYTES_PER_ELEMENT" in a && a.BYTES_PER_ELEMENT === 1;
}
var atitle = (title) => title ? `"${title}" ` : "";
function anumber(n, title = "") {
  if (typeof n !== "number")
    throw new TypeError(atitle(title) + "expected number, got " + typeof n);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new RangeError(atitle(title) + "expected integer >= 0, got " + n);
  return n;
}
function abytes(value, length, title = "") {
  if (isBytes(value) && (length === void 0 || value.length === length))
    return value;
  if (length !== void 0)
    anumber(length, "length");
  const bytes = isBytes(value);
  const ofLen = length !== void 0 ? ` of length ${length}` : "";
  const got = bytes ? `length=${value.length}` : `type=${typeof value}`;
  const message = atitle(title) + "expected Uint8Array" + ofLen + ", got " + got;
  if (!bytes)
    throw new TypeError(message);
  throw new RangeError(message);
}
function copyBytes(bytes) {
  return Uint8Array.from(abytes(bytes));
}
var aobject = (value, label) => {
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw new TypeError((label === "object" ? "" : `"${label}" `) + "expected object, got type=" + typeof value);
};
var aopts = (value, label) => {
  aobject(value, label);
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null)
    throw new TypeError(`"${label}" expected plain object`);
  if (Object.hasOwn(value, "__proto__"))
    throw new TypeError(`"${label}.__proto__" is not allowed`);
};
function aexists(instance, checkFinished = true) {
  if (instance.destroyed)
    throw new Error("hash was destroyed");
  if (checkFinished && instance.finished)
    throw new Error("digest() was already called");
}
function aoutput(out, instance) {
  abytes(out, void 0, "output");
  const min = instance.outputLen;
  if (!(out.length >= min)) {
    throw new RangeError('"output" expected length >= ' + min);
  }
}
function u8(arr2) {
  return new Uint8Array(arr2.buffer, arr2.byteOffset, arr2.byteLength);
}
function u32(arr2) {
  return new Uint32Array(arr2.buffer, arr2.byteOffset, Math.floor(arr2.byteLength / 4));
}
function clean(...arrays) {
  for (let i = 0; i < arrays.length; i++) {
    arrays[i].fill(0);
  }
}
function rotr(word, shift) {
  return word << 32 - shift | word >>> shift;
}
var isLE = /* @__PURE__ */ (() => new Uint8Array(new Uint32Array([287454020]).buffer)[0] === 68)();
function byteSwap(word) {
  return word << 24 & 4278190080 | word << 8 & 16711680 | word >>> 8 & 65280 | word >>> 24 & 255;
}
var swap8IfBE = isLE ? (n) => n : (n) => byteSwap(n) >>> 0;
function byteSwap32(arr2) {
  for (let i = 0; i < arr2.length; i++) {
    arr2[i] = byteSwap(arr2[i]);
  }
  return arr2;
}
var swap32IfBE = isLE ? (u) => u : byteSwap32;
function checkOpts(defaults, opts, title = "opts") {
  aopts(defaults, "defaults");
  if (opts !== void 0)
    aopts(opts, title);
  const merged = Object.assign(/* @__PURE__ */ Object.create(null), defaults, opts);
  return merged;
}
function createHasher(hashCons, info = {}) {
  if (typeof hashCons !== "function")
    throw new TypeError('"hashCons" expected function, got type=' + typeof hashCons);
  info = checkOpts({}, info, "info");
  const hashC = (msg, opts) => hashCons(opts).update(msg).digest();
  const tmp = hashCons(void 0);
  hashC.outputLen = tmp.outputLen;
  hashC.blockLen = tmp.blockLen;
  hashC.canXOF = tmp.canXOF;
  hashC.create = (opts) => hashCons(opts);
  Object.assign(hashC, info);
  return Object.freeze(hashC);
}

// node_modules/@noble/hashes/_md.js
var SHA256_IV = /* @__PURE__ */ Uint32Array.from([
  1779033703,
  3144134277,
  1013904242,
  2773480762,
  1359893119,
  2600822924,
  528734635,
  1541459225
]);

// node_modules/@noble/hashes/_blake.js
function G1s(a, b, c, d, x) {
  a = a + b + x | 0;
  d = rotr(d ^ a, 16);
  c = c + d | 0;
  b = rotr(b ^ c, 12);
  return { a, b, c, d };
}
function G2s(a, b, c, d, x) {
  a = a + b + x | 0;
  d = rotr(d ^ a, 8);
  c = c + d | 0;
  b = rotr(b ^ c, 7);
  return { a, b, c, d };
}

// node_modules/@noble/hashes/blake2.js
var _BLAKE2 = class {
  buffer;
  buffer32;
  finished = false;
  destroyed = false;
  length = 0;
  pos = 0;
  blockLen;
  outputLen;
  canXOF = false;
  constructor(blockLen, outputLen) {
    anumber(blockLen);
    anumber(outputLen);
    this.blockLen = blockLen;
    this.outputLen = outputLen;
    this.buffer = new Uint8Array(blockLen);
    this.buffer32 = u32(this.buffer);
  }
  update(data) {
    aexists(this);
    abytes(data);
    const { blockLen, buffer, buffer32 } = this;
    const len = data.length;
    const offset = data.byteOffset;
    const buf = data.buffer;
    for (let pos = 0; pos < len; ) {
      if (this.pos === blockLen) {
        swap32IfBE(buffer32);
        this.compress(buffer32, 0, false);
        swap32IfBE(buffer32);
        this.pos = 0;
      }
      const take = Math.min(blockLen - this.pos, len - pos);
      const dataOffset = offset + pos;
      if (take === blockLen && !(dataOffset % 4) && pos + take < len) {
        const data32 = new Uint32Array(buf, dataOffset, Math.floor((len - pos) / 4));
        swap32IfBE(data32);
        for (let pos32 = 0; pos + blockLen < len; pos32 += buffer32.length, pos += blockLen) {
          this.length += blockLen;
          this.compress(data32, pos32, false);
        }
        swap32IfBE(data32);
        continue;
      }
      buffer.set(pos === 0 && take === len ? data : data.subarray(pos, pos + take), this.pos);
      this.pos += take;
      this.length += take;
      pos += take;
    }
    return this;
  }
  digestInto(out) {
    aexists(this);
    aoutput(out, this);
    if (out.byteOffset & 3)
      throw new RangeError('"output" expected 4-byte aligned byteOffset, got ' + out.byteOffset);
    const { pos, buffer32 } = this;
    this.finished = true;
    this.buffer.fill(0, pos);
    swap32IfBE(buffer32);
    this.compress(buffer32, 0, true);
    swap32IfBE(buffer32);
    const state = this.get();
    const out32 = out === this.buffer ? buffer32 : u32(out);
    const full = Math.floor(this.outputLen / 4);
    for (let i = 0; i < full; i++)
      out32[i] = swap8IfBE(state[i]);
    const tail = this.outputLen % 4;
    if (!tail)
      return;
    const off = full * 4;
    const word = state[full];
    for (let i = 0; i < tail; i++)
      out[off + i] = word >>> 8 * i;
  }
  digest() {
    const { buffer, outputLen } = this;
    this.digestInto(buffer);
    const res = buffer.slice(0, outputLen);
    this.destroy();
    return res;
  }
  _cloneInto(to) {
    const { buffer, length, finished, destroyed, outputLen, pos } = this;
    to ||= new this.constructor({ dkLen: outputLen });
    to.set(...this.get());
    to.buffer.set(buffer);
    to.destroyed = destroyed;
    to.finished = finished;
    to.length = length;
    to.pos = pos;
    to.outputLen = outputLen;
    return to;
  }
  clone() {
    return this._cloneInto();
  }
};
function _compress(s, offset, msg, rounds, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15) {
  let j = 0;
  for (let i = 0; i < rounds; i++) {
    ({ a: v0, b: v4, c: v8, d: v12 } = G1s(v0, v4, v8, v12, msg[offset + s[j++]]));
    ({ a: v0, b: v4, c: v8, d: v12 } = G2s(v0, v4, v8, v12, msg[offset + s[j++]]));
    ({ a: v1, b: v5, c: v9, d: v13 } = G1s(v1, v5, v9, v13, msg[offset + s[j++]]));
    ({ a: v1, b: v5, c: v9, d: v13 } = G2s(v1, v5, v9, v13, msg[offset + s[j++]]));
    ({ a: v2, b: v6, c: v10, d: v14 } = G1s(v2, v6, v10, v14, msg[offset + s[j++]]));
    ({ a: v2, b: v6, c: v10, d: v14 } = G2s(v2, v6, v10, v14, msg[offset + s[j++]]));
    ({ a: v3, b: v7, c: v11, d: v15 } = G1s(v3, v7, v11, v15, msg[offset + s[j++]]));
    ({ a: v3, b: v7, c: v11, d: v15 } = G2s(v3, v7, v11, v15, msg[offset + s[j++]]));
    ({ a: v0, b: v5, c: v10, d: v15 } = G1s(v0, v5, v10, v15, msg[offset + s[j++]]));
    ({ a: v0, b: v5, c: v10, d: v15 } = G2s(v0, v5, v10, v15, msg[offset + s[j++]]));
    ({ a: v1, b: v6, c: v11, d: v12 } = G1s(v1, v6, v11, v12, msg[offset + s[j++]]));
    ({ a: v1, b: v6, c: v11, d: v12 } = G2s(v1, v6, v11, v12, msg[offset + s[j++]]));
    ({ a: v2, b: v7, c: v8, d: v13 } = G1s(v2, v7, v8, v13, msg[offset + s[j++]]));
    ({ a: v2, b: v7, c: v8, d: v13 } = G2s(v2, v7, v8, v13, msg[offset + s[j++]]));
    ({ a: v3, b: v4, c: v9, d: v14 } = G1s(v3, v4, v9, v14, msg[offset + s[j++]]));
    ({ a: v3, b: v4, c: v9, d: v14 } = G2s(v3, v4, v9, v14, msg[offset + s[j++]]));
  }
  return { v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 };
}

// node_modules/@noble/hashes/blake3.js
var B3_Flags = {
  CHUNK_START: 1,
  CHUNK_END: 2,
  PARENT: 4,
  ROOT: 8,
  KEYED_HASH: 16,
  DERIVE_KEY_CONTEXT: 32,
  DERIVE_KEY_MATERIAL: 64
};
var B3_IV = /* @__PURE__ */ SHA256_IV.slice();
var B3_SIGMA = /* @__PURE__ */ (() => {
  const Id = Array.from({ length: 16 }, (_, i) => i);
  const permute = (arr2) => [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8].map((i) => arr2[i]);
  const res = [];
  for (let i = 0, v = Id; i < 7; i++, v = permute(v))
    res.push(...v);
  return Uint8Array.from(res);
})();
var _BLAKE3 = class __BLAKE3 extends _BLAKE2 {
  canXOF = true;
  chunkPos = 0;
  // Position of current block in chunk
  // How many chunks we already have; exact while this stays within
  // JS's safe-integer range.
  chunksDone = 0;
  flags = 0 | 0;
  IV;
  state;
  stack = [];
  // Output
  posOut = 0;
  bufferOut32 = new Uint32Array(16);
  bufferOut;
  // Index of output chunk; exact while this stays within JS's
  // safe-integer range.
  chunkOut = 0;
  enableXOF = true;
  constructor(opts = {}, flags = 0) {
    opts = checkOpts({}, opts);
    super(64, opts.dkLen === void 0 ? 32 : opts.dkLen);
    const { key, context } = opts;
    const hasContext = context !== void 0;
    if (key !== void 0) {
      if (hasContext)
        throw new Error('cannot use both "key" and "context"');
      abytes(key, 32, "key");
      const k = copyBytes(key);
      this.IV = u32(k);
      swap32IfBE(this.IV);
      this.flags = flags | B3_Flags.KEYED_HASH;
    } else if (hasContext) {
      abytes(context, void 0, "context");
      const ctx = context;
      const contextKey = new __BLAKE3({ dkLen: 32 }, B3_Flags.DERIVE_KEY_CONTEXT).update(ctx).digest();
      this.IV = u32(contextKey);
      swap32IfBE(this.IV);
      this.flags = flags | B3_Flags.DERIVE_KEY_MATERIAL;
    } else {
      this.IV = B3_IV;
      this.flags = flags;
    }
    this.state = this.IV.slice();
    this.bufferOut = u8(this.bufferOut32);
  }
  // _BLAKE2's scalar-state hooks are unused here: BLAKE3 keeps its tree/XOF state in arrays and
  // copies it directly in _cloneInto().
  get() {
    return [];
  }
  set() {
  }
  // Truncated chunk/parent compression: seed v8..v15 as IV[0..3], t0, t1,
  // block length, and flags, then keep only the first 8 output words.
  b2Compress(counter, flags, buf, bufPos = 0) {
    const { state: s, pos } = this;
    const t0 = fromNumL(counter);
    const t1 = fromNumH(counter);
    const { v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 } = _compress(B3_SIGMA, bufPos, buf, 7, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], B3_IV[0], B3_IV[1], B3_IV[2], B3_IV[3], t0, t1, pos, flags);
    s[0] = v0 ^ v8;
    s[1] = v1 ^ v9;
    s[2] = v2 ^ v10;
    s[3] = v3 ^ v11;
    s[4] = v4 ^ v12;
    s[5] = v5 ^ v13;
    s[6] = v6 ^ v14;
    s[7] = v7 ^ v15;
  }
  compress(buf, bufPos = 0, isLast = false) {
    let flags = this.flags;
    if (!this.chunkPos)
      flags |= B3_Flags.CHUNK_START;
    if (this.chunkPos === 15 || isLast)
      flags |= B3_Flags.CHUNK_END;
    if (!isLast)
      this.pos = this.blockLen;
    this.b2Compress(this.chunksDone, flags, buf, bufPos);
    this.chunkPos += 1;
    if (this.chunkPos === 16 || isLast) {
      let chunk = this.state;
      this.state = this.IV.slice();
      for (let last, chunks = this.chunksDone + 1; isLast || !(chunks & 1); chunks = Math.floor(chunks / 2)) {
        if (!(last = this.stack.pop()))
          break;
        this.buffer32.set(last, 0);
        this.buffer32.set(chunk, 8);
        this.pos = this.blockLen;
        this.b2Compress(0, this.flags | B3_Flags.PARENT, this.buffer32, 0);
        chunk = this.state;
        this.state = this.IV.slice();
      }
      this.chunksDone++;
      this.chunkPos = 0;
      this.stack.push(chunk);
    }
    this.pos = 0;
  }
  // Overriding hides _BLAKE2's flat implementation, which would otherwise be inherited
  // and silently miss the tree state (CV stack, chunk counters; get()/set() are stubs here).
  _cloneInto(to) {
    const staleOutput = !!to && to.finished && !to.destroyed;
    to = super._cloneInto(to);
    const { IV, flags, state, chunkPos, posOut, chunkOut, stack, chunksDone } = this;
    to.state.set(state);
    to.stack = stack.map((i) => Uint32Array.from(i));
    if (IV === B3_IV) {
      if (to.IV !== B3_IV)
        clean(to.IV);
      to.IV = B3_IV;
    } else if (to.IV === B3_IV) {
      to.IV = IV.slice();
    } else {
      to.IV.set(IV);
    }
    to.flags = flags;
    to.chunkPos = chunkPos;
    to.chunksDone = chunksDone;
    to.posOut = posOut;
    to.chunkOut = chunkOut;
    to.enableXOF = this.enableXOF;
    if (this.finished) {
      to.bufferOut32.set(this.bufferOut32);
    } else if (staleOutput) {
      clean(to.bufferOut32);
    }
    return to;
  }
  destroy() {
    this.destroyed = true;
    clean(this.state, this.buffer32, this.bufferOut32);
    if (this.IV !== B3_IV)
      clean(this.IV);
    clean(...this.stack);
  }
  // Root/XOF compression: rerun the same ROOT inputs with incrementing output
  // counter `t` and materialize all 16 output words.
  // Same as b2Compress, but doesn't modify state and returns 16 u32 array (instead of 8)
  b2CompressOut() {
    const { state: s, pos, flags, buffer32, bufferOut32: out32 } = this;
    const outCounter = this.chunkOut++;
    const t0 = fromNumL(outCounter);
    const t1 = fromNumH(outCounter);
    swap32IfBE(buffer32);
    const { v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 } = _compress(B3_SIGMA, 0, buffer32, 7, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], B3_IV[0], B3_IV[1], B3_IV[2], B3_IV[3], t0, t1, pos, flags);
    out32[0] = v0 ^ v8;
    out32[1] = v1 ^ v9;
    out32[2] = v2 ^ v10;
    out32[3] = v3 ^ v11;
    out32[4] = v4 ^ v12;
    out32[5] = v5 ^ v13;
    out32[6] = v6 ^ v14;
    out32[7] = v7 ^ v15;
    out32[8] = s[0] ^ v8;
    out32[9] = s[1] ^ v9;
    out32[10] = s[2] ^ v10;
    out32[11] = s[3] ^ v11;
    out32[12] = s[4] ^ v12;
    out32[13] = s[5] ^ v13;
    out32[14] = s[6] ^ v14;
    out32[15] = s[7] ^ v15;
    swap32IfBE(buffer32);
    swap32IfBE(out32);
    this.posOut = 0;
  }
  finish() {
    if (this.finished)
      return;
    this.finished = true;
    this.buffer.fill(0, this.pos);
    let flags = this.flags | B3_Flags.ROOT;
    if (this.stack.length) {
      flags |= B3_Flags.PARENT;
      swap32IfBE(this.buffer32);
      this.compress(this.buffer32, 0, true);
      swap32IfBE(this.buffer32);
      this.chunksDone = 0;
      this.pos = this.blockLen;
    } else {
      flags |= (!this.chunkPos ? B3_Flags.CHUNK_START : 0) | B3_Flags.CHUNK_END;
    }
    this.flags = flags;
    this.b2CompressOut();
  }
  writeInto(out) {
    aexists(this, false);
    abytes(out);
    this.finish();
    const { blockLen, bufferOut } = this;
    for (let pos = 0, len = out.length; pos < len; ) {
      if (this.posOut >= blockLen)
        this.b2CompressOut();
      const take = Math.min(blockLen - this.posOut, len - pos);
      out.set(bufferOut.subarray(this.posOut, this.posOut + take), pos);
      this.posOut += take;
      pos += take;
    }
    return out;
  }
  xofInto(out) {
    if (!this.enableXOF)
      throw new Error("no XOF after digest()");
    return this.writeInto(out);
  }
  xof(bytes) {
    anumber(bytes);
    return this.xofInto(new Uint8Array(bytes));
  }
  digestInto(out) {
    aoutput(out, this);
    if (this.finished)
      throw new Error("digest() was already called");
    this.enableXOF = false;
    this.writeInto(out.length === this.outputLen ? out : out.subarray(0, this.outputLen));
    this.destroy();
  }
  digest() {
    const out = new Uint8Array(this.outputLen);
    this.digestInto(out);
    return out;
  }
};
var blake3 = /* @__PURE__ */ createHasher((opts = {}) => new _BLAKE3(opts));

// src/digest.ts
var text = new TextEncoder();
function u32le(n) {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}
function u64le(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}
function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
function registryHash(registry) {
  const byName = (a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  const parts = [text.encode("hoard-registry-v1")];
  for (const c of registry.filter((r) => !r.intent).sort(byName)) {
    const name = text.encode(c.name);
    parts.push(u32le(name.length), name, u32le(c.version));
  }
  for (const i of registry.filter((r) => r.intent).sort(byName)) {
    const name = text.encode("intent:" + i.name);
    parts.push(u32le(name.length), name, u32le(i.version));
  }
  return blake3(concat(parts));
}
var MOD = 1n << 256n;
function leInt(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = n << 8n | BigInt(bytes[i]);
  return n;
}
function leaf(o) {
  return leInt(blake3(concat([u64le(o.id), u64le(o.version), blake3(o.state)])));
}
function digestOf(objects) {
  let sum = 0n;
  let count = 0n;
  for (const o of objects) {
    sum = (sum + leaf(o)) % MOD;
    count += 1n;
  }
  const out = new Uint8Array(40);
  for (let i = 0; i < 32; i++) out[i] = Number(sum >> BigInt(8 * i) & 0xffn);
  out.set(u64le(count), 32);
  return out;
}
function headBytes(h) {
  return concat([u64le(h.shard), u64le(h.epoch), u64le(h.seq), h.digest]);
}
function freshRoot(heads) {
  return blake3(concat([text.encode("hoard-fresh-root-v1"), ...heads.map(headBytes)]));
}
function tag(h) {
  return blake3(headBytes(h))[0];
}
function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
function hex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// src/cache.ts
var STORE = "shards";
function encodeCopy(copy) {
  return encode([copy.shard, copy.epoch, copy.seq, copy.digest, copy.objects.map((o) => [o.id, o.version, o.state])], {
    useBigInt64: true
  });
}
function decodeCopy(record) {
  if (!(record instanceof Uint8Array)) return null;
  try {
    const [shard, epoch, seq, digest, objects] = decode(record, { useBigInt64: true, maxDepth: 8 });
    const asBig = (v) => typeof v === "bigint" ? v : BigInt(v);
    if (!(digest instanceof Uint8Array) || digest.length !== 40 || !Array.isArray(objects)) return null;
    return {
      shard: asBig(shard),
      epoch: asBig(epoch),
      seq: asBig(seq),
      digest,
      objects: objects.map((o) => {
        const [id, version, state] = o;
        if (!(state instanceof Uint8Array)) throw new Error("a state is not bin");
        return { id: asBig(id), version: asBig(version), state };
      })
    };
  } catch {
    return null;
  }
}
var MemoryStore = class {
  zones = /* @__PURE__ */ new Map();
  async load(zone) {
    return new Map(this.zones.get(zone) ?? []);
  }
  async save(zone, copy) {
    if (!this.zones.has(zone)) this.zones.set(zone, /* @__PURE__ */ new Map());
    this.zones.get(zone).set(copy.shard, copy);
  }
};
function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}
var IndexedDbStore = class _IndexedDbStore {
  constructor(db, prefix) {
    this.db = db;
    this.prefix = prefix;
  }
  db;
  prefix;
  /** Opens the cache of one world (`world`: its identity, hex), service and player. */
  static async open(world, service, perspective) {
    const open = indexedDB.open("hoard-cache", 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    const db = await request(open);
    return new _IndexedDbStore(db, `${world}/${service}/${perspective}/`);
  }
  async load(zone) {
    const prefix = `${this.prefix}${zone}/`;
    const tx = this.db.transaction(STORE, "readonly");
    const range = IDBKeyRange.bound(prefix, prefix + "\uFFFF");
    const records = await request(tx.objectStore(STORE).getAll(range));
    const copies = /* @__PURE__ */ new Map();
    for (const record of records) {
      const copy = decodeCopy(record);
      if (copy && equalBytes(digestOf(copy.objects), copy.digest)) copies.set(copy.shard, copy);
    }
    return copies;
  }
  async save(zone, copy) {
    const key = `${this.prefix}${zone}/${copy.shard}`;
    try {
      await this.put(key, copy);
    } catch (e) {
      if (e?.name !== "QuotaExceededError") throw e;
      await this.evictOtherZones(zone);
      await this.put(key, copy);
    }
  }
  async put(key, copy) {
    const tx = this.db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(encodeCopy(copy), key);
    await new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }
  async evictOtherZones(keep) {
    const tx = this.db.transaction(STORE, "readwrite");
    const store = tx.objectStore(STORE);
    const keys = await request(store.getAllKeys());
    for (const key of keys) {
      if (key.startsWith(this.prefix) && !key.startsWith(`${this.prefix}${keep}/`)) store.delete(key);
    }
    await new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }
};

// node_modules/fzstd/esm/index.mjs
var ab = ArrayBuffer;
var u82 = Uint8Array;
var u16 = Uint16Array;
var i16 = Int16Array;
var i32 = Int32Array;
var slc = function(v, s, e) {
  if (u82.prototype.slice)
    return u82.prototype.slice.call(v, s, e);
  if (s == null || s < 0)
    s = 0;
  if (e == null || e > v.length)
    e = v.length;
  var n = new u82(e - s);
  n.set(v.subarray(s, e));
  return n;
};
var fill = function(v, n, s, e) {
  if (u82.prototype.fill)
    return u82.prototype.fill.call(v, n, s, e);
  if (s == null || s < 0)
    s = 0;
  if (e == null || e > v.length)
    e = v.length;
  for (; s < e; ++s)
    v[s] = n;
  return v;
};
var cpw = function(v, t, s, e) {
  if (u82.prototype.copyWithin)
    return u82.prototype.copyWithin.call(v, t, s, e);
  if (s == null || s < 0)
    s = 0;
  if (e == null || e > v.length)
    e = v.length;
  while (s < e) {
    v[t++] = v[s++];
  }
};
var ec = [
  "invalid zstd data",
  "window size too large (>2046MB)",
  "invalid block type",
  "FSE accuracy too high",
  "match distance too far back",
  "unexpected EOF"
];
var err = function(ind, msg, nt) {
  var e = new Error(msg || ec[ind]);
  e.code = ind;
  if (Error.captureStackTrace)
    Error.captureStackTrace(e, err);
  if (!nt)
    throw e;
  return e;
};
var rb = function(d, b, n) {
  var i = 0, o = 0;
  for (; i < n; ++i)
    o |= d[b++] << (i << 3);
  return o;
};
var b4 = function(d, b) {
  return (d[b] | d[b + 1] << 8 | d[b + 2] << 16 | d[b + 3] << 24) >>> 0;
};
var rzfh = function(dat, w) {
  var n3 = dat[0] | dat[1] << 8 | dat[2] << 16;
  if (n3 == 3126568 && dat[3] == 253) {
    var flg = dat[4];
    var ss = flg >> 5 & 1, cc = flg >> 2 & 1, df = flg & 3, fcf = flg >> 6;
    if (flg & 8)
      err(0);
    var bt = 6 - ss;
    var db = df == 3 ? 4 : df;
    var di = rb(dat, bt, db);
    bt += db;
    var fsb = fcf ? 1 << fcf : ss;
    var fss = rb(dat, bt, fsb) + (fcf == 1 && 256);
    var ws = fss;
    if (!ss) {
      var wb = 1 << 10 + (dat[5] >> 3);
      ws = wb + (wb >> 3) * (dat[5] & 7);
    }
    if (ws > 2145386496)
      err(1);
    var buf = new u82((w == 1 ? fss || ws : w ? 0 : ws) + 12);
    buf[0] = 1, buf[4] = 4, buf[8] = 8;
    return {
      b: bt + fsb,
      y: 0,
      l: 0,
      d: di,
      w: w && w != 1 ? w : buf.subarray(12),
      e: ws,
      o: new i32(buf.buffer, 0, 3),
      u: fss,
      c: cc,
      m: Math.min(131072, ws)
    };
  } else if ((n3 >> 4 | dat[3] << 20) == 25481893) {
    return b4(dat, 4) + 8;
  }
  err(0);
};
var msb = function(val) {
  var bits = 0;
  for (; 1 << bits <= val; ++bits)
    ;
  return bits - 1;
};
var rfse = function(dat, bt, mal) {
  var tpos = (bt << 3) + 4;
  var al = (dat[bt] & 15) + 5;
  if (al > mal)
    err(3);
  var sz = 1 << al;
  var probs = sz, sym = -1, re = -1, i = -1, ht = sz;
  var buf = new ab(512 + (sz << 2));
  var freq = new i16(buf, 0, 256);
  var dstate = new u16(buf, 0, 256);
  var nstate = new u16(buf, 512, sz);
  var bb1 = 512 + (sz << 1);
  var syms = new u82(buf, bb1, sz);
  var nbits = new u82(buf, bb1 + sz);
  while (sym < 255 && probs > 0) {
    var bits = msb(probs + 1);
    var cbt = tpos >> 3;
    var msk = (1 << bits + 1) - 1;
    var val = (dat[cbt] | dat[cbt + 1] << 8 | dat[cbt + 2] << 16) >> (tpos & 7) & msk;
    var msk1fb = (1 << bits) - 1;
    var msv = msk - probs - 1;
    var sval = val & msk1fb;
    if (sval < msv)
      tpos += bits, val = sval;
    else {
      tpos += bits + 1;
      if (val > msk1fb)
        val -= msv;
    }
    freq[++sym] = --val;
    if (val == -1) {
      probs += val;
      syms[--ht] = sym;
    } else
      probs -= val;
    if (!val) {
      do {
        var rbt = tpos >> 3;
        re = (dat[rbt] | dat[rbt + 1] << 8) >> (tpos & 7) & 3;
        tpos += 2;
        sym += re;
      } while (re == 3);
    }
  }
  if (sym > 255 || probs)
    err(0);
  var sympos = 0;
  var sstep = (sz >> 1) + (sz >> 3) + 3;
  var smask = sz - 1;
  for (var s = 0; s <= sym; ++s) {
    var sf = freq[s];
    if (sf < 1) {
      dstate[s] = -sf;
      continue;
    }
    for (i = 0; i < sf; ++i) {
      syms[sympos] = s;
      do {
        sympos = sympos + sstep & smask;
      } while (sympos >= ht);
    }
  }
  if (sympos)
    err(0);
  for (i = 0; i < sz; ++i) {
    var ns = dstate[syms[i]]++;
    var nb = nbits[i] = al - msb(ns);
    nstate[i] = (ns << nb) - sz;
  }
  return [tpos + 7 >> 3, {
    b: al,
    s: syms,
    n: nbits,
    t: nstate
  }];
};
var rhu = function(dat, bt) {
  var i = 0, wc = -1;
  var buf = new u82(292), hb = dat[bt];
  var hw = buf.subarray(0, 256);
  var rc = buf.subarray(256, 268);
  var ri = new u16(buf.buffer, 268);
  if (hb < 128) {
    var _a = rfse(dat, bt + 1, 6), ebt = _a[0], fdt = _a[1];
    bt += hb;
    var epos = ebt << 3;
    var lb = dat[bt];
    if (!lb)
      err(0);
    var st1 = 0, st2 = 0, btr1 = fdt.b, btr2 = btr1;
    var fpos = (++bt << 3) - 8 + msb(lb);
    for (; ; ) {
      fpos -= btr1;
      if (fpos < epos)
        break;
      var cbt = fpos >> 3;
      st1 += (dat[cbt] | dat[cbt + 1] << 8) >> (fpos & 7) & (1 << btr1) - 1;
      hw[++wc] = fdt.s[st1];
      fpos -= btr2;
      if (fpos < epos)
        break;
      cbt = fpos >> 3;
      st2 += (dat[cbt] | dat[cbt + 1] << 8) >> (fpos & 7) & (1 << btr2) - 1;
      hw[++wc] = fdt.s[st2];
      btr1 = fdt.n[st1];
      st1 = fdt.t[st1];
      btr2 = fdt.n[st2];
      st2 = fdt.t[st2];
    }
    if (++wc > 255)
      err(0);
  } else {
    wc = hb - 127;
    for (; i < wc; i += 2) {
      var byte = dat[++bt];
      hw[i] = byte >> 4;
      hw[i + 1] = byte & 15;
    }
    ++bt;
  }
  var wes = 0;
  for (i = 0; i < wc; ++i) {
    var wt = hw[i];
    if (wt > 11)
      err(0);
    wes += wt && 1 << wt - 1;
  }
  var mb = msb(wes) + 1;
  var ts = 1 << mb;
  var rem = ts - wes;
  if (rem & rem - 1)
    err(0);
  hw[wc++] = msb(rem) + 1;
  for (i = 0; i < wc; ++i) {
    var wt = hw[i];
    ++rc[hw[i] = wt && mb + 1 - wt];
  }
  var hbuf = new u82(ts << 1);
  var syms = hbuf.subarray(0, ts), nb = hbuf.subarray(ts);
  ri[mb] = 0;
  for (i = mb; i > 0; --i) {
    var pv = ri[i];
    fill(nb, i, pv, ri[i - 1] = pv + rc[i] * (1 << mb - i));
  }
  if (ri[0] != ts)
    err(0);
  for (i = 0; i < wc; ++i) {
    var bits = hw[i];
    if (bits) {
      var code = ri[bits];
      fill(syms, i, code, ri[bits] = code + (1 << mb - bits));
    }
  }
  return [bt, {
    n: nb,
    b: mb,
    s: syms
  }];
};
var dllt = rfse(/* @__PURE__ */ new u82([
  81,
  16,
  99,
  140,
  49,
  198,
  24,
  99,
  12,
  33,
  196,
  24,
  99,
  102,
  102,
  134,
  70,
  146,
  4
]), 0, 6)[1];
var dmlt = rfse(/* @__PURE__ */ new u82([
  33,
  20,
  196,
  24,
  99,
  140,
  33,
  132,
  16,
  66,
  8,
  33,
  132,
  16,
  66,
  8,
  33,
  68,
  68,
  68,
  68,
  68,
  68,
  68,
  68,
  36,
  9
]), 0, 6)[1];
var doct = rfse(/* @__PURE__ */ new u82([
  32,
  132,
  16,
  66,
  102,
  70,
  68,
  68,
  68,
  68,
  36,
  73,
  2
]), 0, 5)[1];
var b2bl = function(b, s) {
  var len = b.length, bl = new i32(len);
  for (var i = 0; i < len; ++i) {
    bl[i] = s;
    s += 1 << b[i];
  }
  return bl;
};
var llb = /* @__PURE__ */ new u82((/* @__PURE__ */ new i32([
  0,
  0,
  0,
  0,
  16843009,
  50528770,
  134678020,
  202050057,
  269422093
])).buffer, 0, 36);
var llbl = /* @__PURE__ */ b2bl(llb, 0);
var mlb = /* @__PURE__ */ new u82((/* @__PURE__ */ new i32([
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  16843009,
  50528770,
  117769220,
  185207048,
  252579084,
  16
])).buffer, 0, 53);
var mlbl = /* @__PURE__ */ b2bl(mlb, 3);
var dhu = function(dat, out, hu) {
  var len = dat.length, ss = out.length, lb = dat[len - 1], msk = (1 << hu.b) - 1, eb = -hu.b;
  if (!lb)
    err(0);
  var st = 0, btr = hu.b, pos = (len << 3) - 8 + msb(lb) - btr, i = -1;
  for (; pos > eb && i < ss; ) {
    var cbt = pos >> 3;
    var val = (dat[cbt] | dat[cbt + 1] << 8 | dat[cbt + 2] << 16) >> (pos & 7);
    st = (st << btr | val) & msk;
    out[++i] = hu.s[st];
    pos -= btr = hu.n[st];
  }
  if (pos != eb || i + 1 != ss)
    err(0);
};
var dhu4 = function(dat, out, hu) {
  var bt = 6;
  var ss = out.length, sz1 = ss + 3 >> 2, sz2 = sz1 << 1, sz3 = sz1 + sz2;
  dhu(dat.subarray(bt, bt += dat[0] | dat[1] << 8), out.subarray(0, sz1), hu);
  dhu(dat.subarray(bt, bt += dat[2] | dat[3] << 8), out.subarray(sz1, sz2), hu);
  dhu(dat.subarray(bt, bt += dat[4] | dat[5] << 8), out.subarray(sz2, sz3), hu);
  dhu(dat.subarray(bt), out.subarray(sz3), hu);
};
var rzb = function(dat, st, out) {
  var _a;
  var bt = st.b;
  var b0 = dat[bt], btype = b0 >> 1 & 3;
  st.l = b0 & 1;
  var sz = b0 >> 3 | dat[bt + 1] << 5 | dat[bt + 2] << 13;
  var ebt = (bt += 3) + sz;
  if (btype == 1) {
    if (bt >= dat.length)
      return;
    st.b = bt + 1;
    if (out) {
      fill(out, dat[bt], st.y, st.y += sz);
      return out;
    }
    return fill(new u82(sz), dat[bt]);
  }
  if (ebt > dat.length)
    return;
  if (btype == 0) {
    st.b = ebt;
    if (out) {
      out.set(dat.subarray(bt, ebt), st.y);
      st.y += sz;
      return out;
    }
    return slc(dat, bt, ebt);
  }
  if (btype == 2) {
    var b3 = dat[bt], lbt = b3 & 3, sf = b3 >> 2 & 3;
    var lss = b3 >> 4, lcs = 0, s4 = 0;
    if (lbt < 2) {
      if (sf & 1)
        lss |= dat[++bt] << 4 | (sf & 2 && dat[++bt] << 12);
      else
        lss = b3 >> 3;
    } else {
      s4 = sf;
      if (sf < 2)
        lss |= (dat[++bt] & 63) << 4, lcs = dat[bt] >> 6 | dat[++bt] << 2;
      else if (sf == 2)
        lss |= dat[++bt] << 4 | (dat[++bt] & 3) << 12, lcs = dat[bt] >> 2 | dat[++bt] << 6;
      else
        lss |= dat[++bt] << 4 | (dat[++bt] & 63) << 12, lcs = dat[bt] >> 6 | dat[++bt] << 2 | dat[++bt] << 10;
    }
    ++bt;
    var buf = out ? out.subarray(st.y, st.y + st.m) : new u82(st.m);
    var spl = buf.length - lss;
    if (lbt == 0)
      buf.set(dat.subarray(bt, bt += lss), spl);
    else if (lbt == 1)
      fill(buf, dat[bt++], spl);
    else {
      var hu = st.h;
      if (lbt == 2) {
        var hud = rhu(dat, bt);
        lcs += bt - (bt = hud[0]);
        st.h = hu = hud[1];
      } else if (!hu)
        err(0);
      (s4 ? dhu4 : dhu)(dat.subarray(bt, bt += lcs), buf.subarray(spl), hu);
    }
    var ns = dat[bt++];
    if (ns) {
      if (ns == 255)
        ns = (dat[bt++] | dat[bt++] << 8) + 32512;
      else if (ns > 127)
        ns = ns - 128 << 8 | dat[bt++];
      var scm = dat[bt++];
      if (scm & 3)
        err(0);
      var dts = [dmlt, doct, dllt];
      for (var i = 2; i > -1; --i) {
        var md = scm >> (i << 1) + 2 & 3;
        if (md == 1) {
          var rbuf = new u82([0, 0, dat[bt++]]);
          dts[i] = {
            s: rbuf.subarray(2, 3),
            n: rbuf.subarray(0, 1),
            t: new u16(rbuf.buffer, 0, 1),
            b: 0
          };
        } else if (md == 2) {
          _a = rfse(dat, bt, 9 - (i & 1)), bt = _a[0], dts[i] = _a[1];
        } else if (md == 3) {
          if (!st.t)
            err(0);
          dts[i] = st.t[i];
        }
      }
      var _b = st.t = dts, mlt = _b[0], oct = _b[1], llt = _b[2];
      var lb = dat[ebt - 1];
      if (!lb)
        err(0);
      var spos = (ebt << 3) - 8 + msb(lb) - llt.b, cbt = spos >> 3, oubt = 0;
      var lst = (dat[cbt] | dat[cbt + 1] << 8) >> (spos & 7) & (1 << llt.b) - 1;
      cbt = (spos -= oct.b) >> 3;
      var ost = (dat[cbt] | dat[cbt + 1] << 8) >> (spos & 7) & (1 << oct.b) - 1;
      cbt = (spos -= mlt.b) >> 3;
      var mst = (dat[cbt] | dat[cbt + 1] << 8) >> (spos & 7) & (1 << mlt.b) - 1;
      for (++ns; --ns; ) {
        var llc = llt.s[lst];
        var lbtr = llt.n[lst];
        var mlc = mlt.s[mst];
        var mbtr = mlt.n[mst];
        var ofc = oct.s[ost];
        var obtr = oct.n[ost];
        cbt = (spos -= ofc) >> 3;
        var ofp = 1 << ofc;
        var off = ofp + ((dat[cbt] | dat[cbt + 1] << 8 | dat[cbt + 2] << 16 | dat[cbt + 3] << 24) >>> (spos & 7) & ofp - 1);
        cbt = (spos -= mlb[mlc]) >> 3;
        var ml = mlbl[mlc] + ((dat[cbt] | dat[cbt + 1] << 8 | dat[cbt + 2] << 16) >> (spos & 7) & (1 << mlb[mlc]) - 1);
        cbt = (spos -= llb[llc]) >> 3;
        var ll = llbl[llc] + ((dat[cbt] | dat[cbt + 1] << 8 | dat[cbt + 2] << 16) >> (spos & 7) & (1 << llb[llc]) - 1);
        cbt = (spos -= lbtr) >> 3;
        lst = llt.t[lst] + ((dat[cbt] | dat[cbt + 1] << 8) >> (spos & 7) & (1 << lbtr) - 1);
        cbt = (spos -= mbtr) >> 3;
        mst = mlt.t[mst] + ((dat[cbt] | dat[cbt + 1] << 8) >> (spos & 7) & (1 << mbtr) - 1);
        cbt = (spos -= obtr) >> 3;
        ost = oct.t[ost] + ((dat[cbt] | dat[cbt + 1] << 8) >> (spos & 7) & (1 << obtr) - 1);
        if (off > 3) {
          st.o[2] = st.o[1];
          st.o[1] = st.o[0];
          st.o[0] = off -= 3;
        } else {
          var idx = off - (ll != 0);
          if (idx) {
            off = idx == 3 ? st.o[0] - 1 : st.o[idx];
            if (idx > 1)
              st.o[2] = st.o[1];
            st.o[1] = st.o[0];
            st.o[0] = off;
          } else
            off = st.o[0];
        }
        for (var i = 0; i < ll; ++i) {
          buf[oubt + i] = buf[spl + i];
        }
        oubt += ll, spl += ll;
        var stin = oubt - off;
        if (stin < 0) {
          var len = -stin;
          var bs = st.e + stin;
          if (len > ml)
            len = ml;
          for (var i = 0; i < len; ++i) {
            buf[oubt + i] = st.w[bs + i];
          }
          oubt += len, ml -= len, stin = 0;
        }
        for (var i = 0; i < ml; ++i) {
          buf[oubt + i] = buf[stin + i];
        }
        oubt += ml;
      }
      if (oubt != spl) {
        while (spl < buf.length) {
          buf[oubt++] = buf[spl++];
        }
      } else
        oubt = buf.length;
      if (out)
        st.y += oubt;
      else
        buf = slc(buf, 0, oubt);
    } else if (out) {
      st.y += lss;
      if (spl) {
        for (var i = 0; i < lss; ++i) {
          buf[i] = buf[spl + i];
        }
      }
    } else if (spl)
      buf = slc(buf, spl);
    st.b = ebt;
    return buf;
  }
  err(2);
};
var cct = function(bufs, ol) {
  if (bufs.length == 1)
    return bufs[0];
  var buf = new u82(ol);
  for (var i = 0, b = 0; i < bufs.length; ++i) {
    var chk = bufs[i];
    buf.set(chk, b);
    b += chk.length;
  }
  return buf;
};
var Decompress = /* @__PURE__ */ (function() {
  function Decompress2(ondata) {
    this.ondata = ondata;
    this.c = [];
    this.l = 0;
    this.z = 0;
  }
  Decompress2.prototype.push = function(chunk, final) {
    if (typeof this.s == "number") {
      var sub = Math.min(chunk.length, this.s);
      chunk = chunk.subarray(sub);
      this.s -= sub;
    }
    var sl = chunk.length;
    var ncs = sl + this.l;
    if (!this.s) {
      if (final) {
        if (!ncs) {
          this.ondata(new u82(0), true);
          return;
        }
        if (ncs < 5)
          err(5);
      } else if (ncs < 18) {
        this.c.push(chunk);
        this.l = ncs;
        return;
      }
      if (this.l) {
        this.c.push(chunk);
        chunk = cct(this.c, ncs);
        this.c = [];
        this.l = 0;
      }
      if (typeof (this.s = rzfh(chunk)) == "number")
        return this.push(chunk, final);
    }
    if (typeof this.s != "number") {
      if (ncs < (this.z || 3)) {
        if (final)
          err(5);
        this.c.push(chunk);
        this.l = ncs;
        return;
      }
      if (this.l) {
        this.c.push(chunk);
        chunk = cct(this.c, ncs);
        this.c = [];
        this.l = 0;
      }
      if (!this.z && ncs < (this.z = chunk[this.s.b] & 2 ? 4 : 3 + (chunk[this.s.b] >> 3 | chunk[this.s.b + 1] << 5 | chunk[this.s.b + 2] << 13))) {
        if (final)
          err(5);
        this.c.push(chunk);
        this.l = ncs;
        return;
      } else
        this.z = 0;
      for (; ; ) {
        var blk = rzb(chunk, this.s);
        if (!blk) {
          if (final)
            err(5);
          var adc = chunk.subarray(this.s.b);
          this.s.b = 0;
          this.c.push(adc), this.l += adc.length;
          return;
        } else {
          this.ondata(blk, false);
          cpw(this.s.w, 0, blk.length);
          this.s.w.set(blk, this.s.w.length - blk.length);
        }
        if (this.s.l) {
          var rest = chunk.subarray(this.s.b);
          this.s = this.s.c * 4;
          this.push(rest, final);
          return;
        }
      }
    } else if (final)
      err(5);
  };
  return Decompress2;
})();

// src/wire.ts
var MAX_BULK_FRAME = 32 * 1024 * 1024;
var MAX_CONTROL_FRAME = 256 * 1024;
var CODEC_ZSTD = 1;
var MAX_PACKED_SIZE = 8 * 1024 * 1024;
var MAX_PACKED_RATIO = 64;
var PROTOCOL_VERSION = 11;
var Type = /* @__PURE__ */ ((Type2) => {
  Type2[Type2["Hello"] = 1] = "Hello";
  Type2[Type2["EnterZone"] = 2] = "EnterZone";
  Type2[Type2["LeaveZone"] = 3] = "LeaveZone";
  Type2[Type2["Repair"] = 4] = "Repair";
  Type2[Type2["Intent"] = 5] = "Intent";
  Type2[Type2["Welcome"] = 129] = "Welcome";
  Type2[Type2["Error"] = 130] = "Error";
  Type2[Type2["ZoneDenied"] = 131] = "ZoneDenied";
  Type2[Type2["IntentRejected"] = 132] = "IntentRejected";
  Type2[Type2["ZoneElsewhere"] = 133] = "ZoneElsewhere";
  Type2[Type2["IntentNonce"] = 134] = "IntentNonce";
  Type2[Type2["AnswerBegin"] = 144] = "AnswerBegin";
  Type2[Type2["UpToDate"] = 145] = "UpToDate";
  Type2[Type2["Changes"] = 146] = "Changes";
  Type2[Type2["Manifest"] = 147] = "Manifest";
  Type2[Type2["Snapshot"] = 148] = "Snapshot";
  Type2[Type2["AnswerEnd"] = 149] = "AnswerEnd";
  Type2[Type2["Parts"] = 150] = "Parts";
  Type2[Type2["More"] = 151] = "More";
  Type2[Type2["Fresh"] = 152] = "Fresh";
  Type2[Type2["HeadProof"] = 153] = "HeadProof";
  Type2[Type2["Packed"] = 154] = "Packed";
  Type2[Type2["Delta"] = 160] = "Delta";
  Type2[Type2["Transient"] = 161] = "Transient";
  Type2[Type2["Status"] = 162] = "Status";
  Type2[Type2["Processed"] = 163] = "Processed";
  Type2[Type2["TransientPatch"] = 164] = "TransientPatch";
  Type2[Type2["GameMessage"] = 165] = "GameMessage";
  return Type2;
})(Type || {});
var ProtocolError = class extends Error {
};
function toShortest(v) {
  return v >= 0n && v <= 0xffffffffn ? Number(v) : v;
}
function shortest(v) {
  if (typeof v === "bigint") return toShortest(v);
  if (typeof v === "number" && Number.isInteger(v) && v > 4294967295) return BigInt(v);
  if (Array.isArray(v)) return v.map(shortest);
  if (v instanceof Uint8Array || v === null || typeof v !== "object") return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shortest(x)]));
}
function frame(type, fields) {
  const body = encode(shortest(fields), { useBigInt64: true });
  const out = new Uint8Array(5 + body.length);
  new DataView(out.buffer).setUint32(0, 1 + body.length);
  out[4] = type;
  out.set(body, 5);
  return out;
}
function unpack(codec, size, data) {
  if (codec !== CODEC_ZSTD) throw new ProtocolError(`a Packed frame in codec ${codec}, which this client did not list`);
  if (size > MAX_PACKED_SIZE || size > MAX_PACKED_RATIO * data.length) {
    throw new ProtocolError(`a Packed frame of ${size} bytes from ${data.length} (at most 8 MiB and ${MAX_PACKED_RATIO}\xD7)`);
  }
  const out = new Uint8Array(size);
  let filled = 0;
  const stream = new Decompress((chunk) => {
    if (filled + chunk.length > size) throw new ProtocolError(`a Packed frame decompresses past its size ${size}`);
    out.set(chunk, filled);
    filled += chunk.length;
  });
  try {
    stream.push(data, true);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError(`a Packed frame does not decompress: ${e.message}`);
  }
  if (filled !== size) throw new ProtocolError(`a Packed frame decompresses to ${filled} bytes, not its size ${size}`);
  return out;
}
var FrameDecoder = class _FrameDecoder {
  constructor(limit, packed = false) {
    this.limit = limit;
    this.packed = packed;
  }
  limit;
  packed;
  buf = new Uint8Array(0);
  unpacked = [];
  push(chunk) {
    const next = new Uint8Array(this.buf.length + chunk.length);
    next.set(this.buf);
    next.set(chunk, this.buf.length);
    this.buf = next;
  }
  /** The next whole frame, or `null` until more bytes arrive. */
  next() {
    for (; ; ) {
      const queued = this.unpacked.shift();
      if (queued) return queued;
      if (this.buf.length < 4) return null;
      const length = new DataView(this.buf.buffer, this.buf.byteOffset).getUint32(0);
      if (length === 0 || length > this.limit) {
        throw new ProtocolError(`frame length ${length} outside 1..${this.limit}`);
      }
      if (this.buf.length < 4 + length) return null;
      const type = this.buf[4];
      const body = this.buf.subarray(5, 4 + length);
      this.buf = this.buf.slice(4 + length);
      const fields = decodeBody(type, body);
      if (type !== 154 /* Packed */) return { type, fields, bytes: 4 + length };
      if (!this.packed) throw new ProtocolError("a Packed frame where none may come (no codecs listed, or the control stream)");
      this.unpack(fields, 4 + length);
    }
  }
  /** Queues the frames inside a `Packed` frame of `bytes` on the stream. */
  unpack(fields, bytes) {
    const content = unpack(num(fields[0]), num(fields[1]), bin(fields[2]));
    const inner = new _FrameDecoder(this.limit);
    inner.push(content);
    const frames = [];
    for (let f = inner.next(); f; f = inner.next()) frames.push(f);
    if (inner.partial()) throw new ProtocolError("a Packed frame ends inside a frame");
    let charged = 0;
    frames.forEach((f, i) => {
      const share = i === frames.length - 1 ? bytes - charged : Math.floor(bytes * f.bytes / content.length);
      charged += share;
      f.bytes = share;
    });
    this.unpacked.push(...frames);
  }
  /** Whether a frame was cut off by the end of the stream. */
  partial() {
    return this.buf.length > 0;
  }
};
function decodeBody(type, body) {
  const fields = decode(body, { useBigInt64: true, maxDepth: 1024 });
  if (!Array.isArray(fields)) throw new ProtocolError(`body of type ${type} is not an array`);
  return fields;
}
var FrameReader = class {
  decoder;
  reader;
  constructor(stream, limit, packed = false) {
    this.decoder = new FrameDecoder(limit, packed);
    this.reader = stream.getReader();
  }
  /** The next frame; `null` at the stream's end. */
  async next() {
    for (; ; ) {
      const frame2 = this.decoder.next();
      if (frame2) return frame2;
      const { value, done } = await this.reader.read();
      if (done) {
        if (this.decoder.partial()) throw new ProtocolError("the stream ended inside a frame");
        return null;
      }
      this.decoder.push(value);
    }
  }
  cancel() {
    this.reader.cancel().catch(() => {
    });
  }
};
async function readWhole(reader) {
  const f = await reader.next();
  if (!f || f.type !== 150 /* Parts */) return f;
  const count = num(f.fields[0]);
  const message = await reader.next();
  if (!message) throw new ProtocolError("the stream ended after Parts");
  const list = message.type === 148 /* Snapshot */ ? 5 : message.type === 160 /* Delta */ ? 7 : 6;
  const objects = objectList(message.fields[list]);
  let bytes = f.bytes + message.bytes;
  for (let i = 0; i < count; i++) {
    const more = await reader.next();
    if (!more || more.type !== 151 /* More */) throw new ProtocolError("Parts not followed by its More frames");
    objects.push(...objectList(more.fields[0]));
    bytes += more.bytes;
  }
  message.fields[list] = objects;
  message.bytes = bytes;
  return message;
}
function big(v) {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return BigInt(v);
  throw new ProtocolError(`expected an unsigned integer, got ${String(v)}`);
}
function num(v) {
  const n = Number(big(v));
  if (!Number.isSafeInteger(n)) throw new ProtocolError(`integer ${String(v)} too large`);
  return n;
}
function bin(v, len) {
  if (!(v instanceof Uint8Array)) throw new ProtocolError("expected bin");
  if (len !== void 0 && v.length !== len) throw new ProtocolError(`expected bin${len}, got ${v.length} bytes`);
  return v;
}
function str(v) {
  if (typeof v !== "string") throw new ProtocolError("expected str");
  return v;
}
function arr(v) {
  if (!Array.isArray(v)) throw new ProtocolError("expected an array");
  return v;
}
function idList(v) {
  const out = [];
  let prev = 0n;
  arr(v).forEach((x, i) => {
    const gap = big(x);
    if (i > 0 && gap === 0n) throw new ProtocolError("a zero gap in an id list");
    prev = i === 0 ? gap : prev + gap;
    if (prev >= 1n << 64n) throw new ProtocolError("an id list overflows");
    out.push(prev);
  });
  return out;
}
function encodeIdList(ids) {
  return ids.map((id, i) => i === 0 ? id : id - ids[i - 1]);
}
function objectList(v) {
  const [idsRaw, versionsRaw, statesRaw] = arr(v);
  const ids = idList(idsRaw);
  const versions = arr(versionsRaw);
  const states = arr(statesRaw);
  if (versions.length !== ids.length + 1 || states.length !== ids.length) {
    throw new ProtocolError("an object list's columns differ in length");
  }
  const top = big(versions[0]);
  return ids.map((id, i) => {
    const distance = big(versions[i + 1]);
    if (distance > top) throw new ProtocolError("a version distance above the highest version");
    return { id, version: top - distance, state: bin(states[i]) };
  });
}

// src/proofs.ts
var MAX_SIGNATURE_BYTES = 512;
var MAX_PENDING_PROOFS = 4096;
var MAX_WORLD_KEY_BYTES = 1024;
var MAX_REMEMBERED_HEADS = 65536;
var SCHEME_ECDSA_P256_SHA256 = 1027;
var SCHEME_ECDSA_P384_SHA384 = 1283;
var SCHEME_ED25519 = 2055;
var ProofError = class extends ProtocolError {
};
var text2 = new TextEncoder();
function headProof(f) {
  const x = f.fields;
  const signature = bin(x[6]);
  if (signature.length > MAX_SIGNATURE_BYTES) throw new ProtocolError(`a head's signature of ${signature.length} bytes`);
  return {
    shard: big(x[0]),
    epoch: big(x[1]),
    seq: big(x[2]),
    digest: bin(x[3], 40),
    root: bin(x[4], 32),
    scheme: num(x[5]),
    signature
  };
}
function setRoot(objects) {
  const h = blake3.create();
  h.update(text2.encode("hoard-set-root-v1"));
  for (const o of objects) {
    h.update(u64le(o.id));
    h.update(u64le(o.version));
    h.update(blake3(o.state));
  }
  return h.digest();
}
function signedStatement(world, service, p) {
  const name = text2.encode(service);
  if (name.length > 255) throw new ProtocolError("a service name over 255 bytes");
  return concat([
    text2.encode("hoard-signed-head-v1"),
    world,
    Uint8Array.of(name.length),
    name,
    u64le(p.shard),
    u64le(p.epoch),
    u64le(p.seq),
    p.digest,
    p.root
  ]);
}
function ecdsaRaw(der, width) {
  let at = 0;
  const length = () => {
    const first = der[at++];
    if (first === void 0) return null;
    if (first < 128) return first;
    if (first !== 129) return null;
    const n = der[at++];
    return n === void 0 || n < 128 ? null : n;
  };
  if (der[at++] !== 48) return null;
  const total = length();
  if (total === null || at + total !== der.length) return null;
  const out = new Uint8Array(2 * width);
  for (let i = 0; i < 2; i++) {
    if (der[at++] !== 2) return null;
    const n = length();
    if (n === null || n === 0 || at + n > der.length) return null;
    let value = der.subarray(at, at + n);
    at += n;
    if (value[0] & 128) return null;
    while (value.length > 1 && value[0] === 0) value = value.subarray(1);
    if (value.length > width) return null;
    out.set(value, (i + 1) * width - value.length);
  }
  return at === der.length ? out : null;
}
var SCHEMES = /* @__PURE__ */ new Map([
  [SCHEME_ECDSA_P256_SHA256, { import: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" }, width: 32 }],
  [SCHEME_ECDSA_P384_SHA384, { import: { name: "ECDSA", namedCurve: "P-384" }, verify: { name: "ECDSA", hash: "SHA-384" }, width: 48 }],
  [SCHEME_ED25519, { import: { name: "Ed25519" }, verify: { name: "Ed25519" }, width: 0 }]
]);
var ProofChecker = class _ProofChecker {
  constructor(world, service, worldKey) {
    this.world = world;
    this.service = service;
    this.worldKey = worldKey;
  }
  world;
  service;
  worldKey;
  keys = /* @__PURE__ */ new Map();
  /** The newest head verified per shard: an older one in the same epoch is a replay. */
  newest = /* @__PURE__ */ new Map();
  /**
   * The checker for `world` (its identity) with the key a `Welcome` gave:
   * refused unless the key's BLAKE3 is the world's identity.
   */
  static of(world, service, worldKey) {
    if (worldKey.length === 0) throw new ProofError(`world ${hex(world)} sent no key: it cannot prove its shards`);
    if (worldKey.length > MAX_WORLD_KEY_BYTES) throw new ProtocolError(`a world key of ${worldKey.length} bytes`);
    if (!equalBytes(blake3(worldKey), world)) {
      throw new ProofError(`the world key sent is not world ${hex(world)}'s (its BLAKE3 differs)`);
    }
    return new _ProofChecker(world, service, worldKey);
  }
  /** Checks `p`'s signature and that it is not older than a head held for its shard (`held`: the copy named). */
  async check(p, held) {
    const scheme = SCHEMES.get(p.scheme);
    if (!scheme) throw new ProofError(`shard ${p.shard}: signature scheme 0x${p.scheme.toString(16)} is not one hoard takes`);
    if (!this.keys.has(p.scheme)) {
      const imported = crypto.subtle.importKey("spki", this.worldKey, scheme.import, false, ["verify"]).catch(() => null);
      this.keys.set(p.scheme, imported);
    }
    const key = await this.keys.get(p.scheme);
    const signature = scheme.width ? ecdsaRaw(p.signature, scheme.width) : p.signature;
    const statement = signedStatement(this.world, this.service, p);
    const good = key !== null && signature !== null && await crypto.subtle.verify(scheme.verify, key, signature, statement).catch(() => false);
    if (!good) throw new ProofError(`shard ${p.shard}: the head's signature does not verify with the world's key`);
    for (const h of [this.newest.get(p.shard), held]) {
      if (h && h.epoch === p.epoch && p.seq < h.seq) {
        throw new ProofError(`shard ${p.shard}: a signed head at seq ${p.seq} after one at ${h.seq} (an old head replayed)`);
      }
    }
  }
  /** Checks that `copy` is exactly the shard `p` (checked) signs, and records its head as the newest. */
  checkCopy(p, copy) {
    if (copy.shard !== p.shard || copy.epoch !== p.epoch || copy.seq !== p.seq || !equalBytes(copy.digest, p.digest)) {
      throw new ProofError(
        `shard ${p.shard}: the copy is at epoch ${copy.epoch} seq ${copy.seq}, the signed head says epoch ${p.epoch} seq ${p.seq}` + (equalBytes(copy.digest, p.digest) ? "" : " with another digest")
      );
    }
    if (!equalBytes(setRoot(copy.objects), p.root)) {
      throw new ProofError(`shard ${p.shard}: the objects are not the set the world signed (set root differs)`);
    }
    this.newest.delete(p.shard);
    this.newest.set(p.shard, { epoch: p.epoch, seq: p.seq });
    if (this.newest.size > MAX_REMEMBERED_HEADS) this.newest.delete(this.newest.keys().next().value);
  }
};
var PendingProofs = class {
  /** `awaiting`: what they wait for, for the error past the bound. */
  constructor(awaiting) {
    this.awaiting = awaiting;
  }
  awaiting;
  byShard = /* @__PURE__ */ new Map();
  /** Checks the `HeadProof` frame `f` (against `held`, the copy named, if any) and keeps it for its shard. */
  async hold(checker, f, held) {
    const proof = headProof(f);
    if (this.byShard.size >= MAX_PENDING_PROOFS && !this.byShard.has(proof.shard)) {
      throw new ProtocolError(`more than ${MAX_PENDING_PROOFS} signed heads without their ${this.awaiting}`);
    }
    await checker.check(proof, held);
    this.byShard.set(proof.shard, proof);
  }
  /** The head kept for `shard`, taken. */
  take(shard) {
    const proof = this.byShard.get(shard);
    this.byShard.delete(shard);
    return proof;
  }
};

// src/shard.ts
function objectsAfter(base, manifest, ids, upserts) {
  const byId = new Map(base.map((o) => [o.id, o]));
  if (manifest) {
    const keep = new Set(ids);
    for (const id of [...byId.keys()]) if (!keep.has(id)) byId.delete(id);
  } else {
    for (const id of ids) byId.delete(id);
  }
  for (const o of upserts) byId.set(o.id, o);
  return [...byId.values()].sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
function applyMessage(base, f) {
  const x = f.fields;
  const objects = objectsAfter(base.objects, f.type === 147 /* Manifest */, idList(x[5]), objectList(x[6]));
  const digest = bin(x[4], 40);
  if (!equalBytes(digestOf(objects), digest)) return null;
  return { shard: base.shard, epoch: base.epoch, seq: big(x[3]), digest, objects };
}

// src/repair.ts
var MAX_REPAIR_OBJECTS = 8192;
function repairList(copy) {
  return (copy?.objects ?? []).slice(0, MAX_REPAIR_OBJECTS).map((o) => [o.id, o.version, blake3(o.state).subarray(0, 8)]);
}
function rebuild(copy, manifest) {
  if (manifest.type !== 147 /* Manifest */) throw new ProtocolError(`a repair answered with message type ${manifest.type}`);
  const x = manifest.fields;
  const shard = big(x[0]);
  const live = idList(x[5]);
  const objects = objectsAfter(copy?.objects ?? [], true, live, objectList(x[6]));
  const sent = new Set(objects.map((o) => o.id));
  const missing = live.find((id) => !sent.has(id));
  if (missing !== void 0) throw new ProtocolError(`shard ${shard}: the repair names object ${missing} live but sends it nowhere`);
  const digest = bin(x[4], 40);
  if (!equalBytes(digestOf(objects), digest)) throw new ProtocolError(`shard ${shard}: the repaired copy's digest is not the server's`);
  return { shard, epoch: big(x[1]), seq: big(x[3]), digest, objects };
}

// src/signing.ts
var encoder = new TextEncoder();
function base64url(bytes) {
  let text3 = "";
  for (const b of bytes) text3 += String.fromCharCode(b);
  return btoa(text3).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function fromBase64url(text3) {
  if (!/^[A-Za-z0-9_-]*$/.test(text3)) throw new Error("not base64url");
  const padded = text3.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text3.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}
function worldTokenClaims(token) {
  if (!token.startsWith("v4.public.") || token.length > 1024) return null;
  try {
    const message = fromBase64url(token.slice("v4.public.".length).split(".")[0]);
    if (message.length <= 64) return null;
    const claims = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(message.subarray(0, message.length - 64)));
    if (typeof claims?.sub !== "string") return null;
    return { sub: claims.sub, key: typeof claims.key === "string" ? claims.key : null };
  } catch {
    return null;
  }
}
async function importPlayerKey(paserk) {
  if (!paserk.startsWith("k4.secret.")) throw new Error("a player key is a PASERK k4.secret.\u2026");
  const bytes = fromBase64url(paserk.slice("k4.secret.".length).trim());
  if (bytes.length !== 64) throw new Error("a player key is 64 bytes (seed and public key)");
  const jwk = { kty: "OKP", crv: "Ed25519", d: base64url(bytes.subarray(0, 32)), x: base64url(bytes.subarray(32)) };
  const key = await crypto.subtle.importKey("jwk", jwk, { name: "Ed25519" }, false, ["sign"]);
  return { key, public: `k4.public.${base64url(bytes.subarray(32))}` };
}
function intentStatement(world, nonce, player, seq, kind, payload) {
  const name = encoder.encode(player).subarray(0, 255);
  const kindBytes = encoder.encode(kind).subarray(0, 255);
  const context = encoder.encode("hoard-intent-v1");
  const out = new Uint8Array(context.length + 32 + 16 + 1 + name.length + 4 + 1 + kindBytes.length + 4 + payload.length);
  const view = new DataView(out.buffer);
  let at = 0;
  const put = (bytes) => {
    out.set(bytes, at);
    at += bytes.length;
  };
  put(context);
  put(world);
  put(nonce);
  out[at++] = name.length;
  put(name);
  view.setUint32(at, seq >>> 0, true);
  at += 4;
  out[at++] = kindBytes.length;
  put(kindBytes);
  view.setUint32(at, payload.length, true);
  at += 4;
  put(payload);
  return out;
}
async function signStatement(key, statement) {
  return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key, statement));
}

// src/transient.ts
var MAX_TRANSIENT = 64 * 1024;
var MAX_PATCH_OPS = 4096;
function applyPatch(base, ops) {
  if (!Array.isArray(ops)) throw new ProtocolError("a patch's ops are not an array");
  if (ops.length > MAX_PATCH_OPS) throw new ProtocolError(`a patch of ${ops.length} ops (at most ${MAX_PATCH_OPS})`);
  const parts = [];
  let size = 0;
  for (const op of ops) {
    if (!Array.isArray(op) || op.length !== 3) throw new ProtocolError("a patch op is not [offset, len, bytes]");
    const offset = num(op[0]);
    const len = num(op[1]);
    const bytes = bin(op[2]);
    if (offset + len > base.length) throw new ProtocolError("a patch op copies past the end of its base");
    parts.push(base.subarray(offset, offset + len), bytes);
    size += len + bytes.length;
    if (size > MAX_TRANSIENT) throw new ProtocolError("a patched transient payload over 64 KiB");
  }
  return concat(parts);
}
var TransientState = class {
  payloads = /* @__PURE__ */ new Map();
  /** A whole `Transient`: the zone's payload from now on. */
  replace(zone, payload) {
    if (payload.length > MAX_TRANSIENT) throw new ProtocolError("a transient payload over 64 KiB");
    this.payloads.set(zone, payload);
  }
  /**
   * A `TransientPatch`: the zone's new payload, or `undefined` when the
   * patch does not follow the payload held (dropped; the zone's payload is
   * forgotten until the next whole one).
   */
  patch(zone, base, ops) {
    const named = bin(base, 8);
    const held = this.payloads.get(zone);
    if (!held) return void 0;
    if (!equalBytes(blake3(held).subarray(0, 8), named)) {
      this.payloads.delete(zone);
      return void 0;
    }
    const next = applyPatch(held, ops);
    this.payloads.set(zone, next);
    return next;
  }
  get(zone) {
    return this.payloads.get(zone);
  }
  forget(zone) {
    this.payloads.delete(zone);
  }
};

// src/values.ts
function encodeValue(value) {
  return encode(shortest(value), { useBigInt64: true });
}
function decodeValue(bytes) {
  return decode(bytes, { useBigInt64: true, maxDepth: 64 });
}
function components(state) {
  const map = decode(state, { useBigInt64: true, maxDepth: 8 });
  if (map === null || typeof map !== "object" || Array.isArray(map) || map instanceof Uint8Array) {
    throw new ProtocolError("an object's state is not a map of components");
  }
  const out = /* @__PURE__ */ new Map();
  for (const [name, bytes] of Object.entries(map)) {
    if (!(bytes instanceof Uint8Array)) throw new ProtocolError(`component ${name} is not bin`);
    out.set(name, decodeValue(bytes));
  }
  return out;
}

// src/client.ts
function perspectiveOf(token) {
  const name = token.startsWith("dev:") ? token.slice(4) : token.startsWith("v1.") ? token.split(".")[1] : worldTokenClaims(token)?.sub ?? null;
  return name && /^[a-z0-9_-]{1,64}$/.test(name) ? name : null;
}
var ServerError = class extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
  code;
};
var ZoneElsewhere = class extends Error {
  constructor(zone, address) {
    super(`zone ${zone} is served by ${address}`);
    this.zone = zone;
    this.address = address;
  }
  zone;
  address;
};
var MAX_PENDING_INTENTS = 256;
var MAX_HELD_DELTAS = 4096;
var HoardWebClient = class _HoardWebClient {
  constructor(wt, stream, options) {
    this.wt = wt;
    this.options = options;
    this.writer = stream.writable.getWriter();
    this.control = new FrameReader(stream.readable, MAX_CONTROL_FRAME);
  }
  wt;
  options;
  /** The world's identity (hex): the cache namespace. */
  world = "";
  perspective = "";
  zones = [];
  /** Server ticks per second. */
  tickHz = 0;
  /** The last `Status`: whether the world takes actions now, and why not. */
  status = { writable: true, message: "" };
  writer;
  control;
  store;
  nextRequest = 1;
  nextSeq = 1;
  /** The player's key, when the token binds one (its intents are signed). */
  signer = null;
  /** The nonce intents are signed under, once `IntentNonce` came. */
  nonce = null;
  nonceWaiters = [];
  /** The last signed intent's sending (the next waits for it). */
  signedSends = Promise.resolve();
  /** The world's identity, as bytes (signed intents name it). */
  worldBytes = new Uint8Array(32);
  /** Entered zones' copies. */
  live = /* @__PURE__ */ new Map();
  /** Zones being entered (subscribed), with the deltas that came meanwhile. */
  heldDeltas = /* @__PURE__ */ new Map();
  /** Zones to enter again once their entry under way is done. */
  again = /* @__PURE__ */ new Set();
  transient = new TransientState();
  entries = /* @__PURE__ */ new Map();
  entering = /* @__PURE__ */ new Map();
  /** Followed entries under way, by zone. */
  inFlight = /* @__PURE__ */ new Map();
  intents = /* @__PURE__ */ new Map();
  repairs = /* @__PURE__ */ new Map();
  /** Live shards being repaired (`zone shard`), with the deltas that came meanwhile. */
  mending = /* @__PURE__ */ new Map();
  /** Live shards that need another repair once the one under way is done. */
  mendAgain = /* @__PURE__ */ new Set();
  zoneListeners = [];
  transientListeners = [];
  messageListeners = [];
  closedReason = null;
  /** With `ConnectOptions.world`: the checker of the world's signed heads, once `Welcome` gave its key. */
  checker = null;
  checkerRefused = null;
  /** Signed heads read on the delta stream, awaiting their `Delta`. */
  deltaProofs = new PendingProofs("deltas");
  /**
   * Connects and signs in. With `enter`, the zone's entry goes right
   * behind `Hello` in the same flight (as PROTOCOL.md's pipelining allows),
   * naming the copies kept for the world this URL served last time: a
   * returning player's zone costs one round trip once the session is up.
   * Its outcome is `firstEntry`.
   */
  static async connect(options) {
    const wt = new WebTransport(options.url, {
      serverCertificateHashes: (options.certificateHashes ?? []).map((value) => ({ algorithm: "sha-256", value }))
    });
    await wt.ready;
    const bound = worldTokenClaims(options.token)?.key ?? null;
    const signer = options.playerKey ? await importPlayerKey(options.playerKey) : null;
    if (bound && !signer) throw new Error("the token binds a player key: give it as playerKey (intents are signed with it)");
    if (signer && signer.public !== bound) throw new Error("playerKey is not the key the token binds");
    const client = new _HoardWebClient(wt, await wt.createBidirectionalStream(), options);
    client.signer = signer;
    const service = options.service ?? "world";
    const rememberedAt = `hoard-world ${options.url} ${service}`;
    const remembered = options.enter ? _HoardWebClient.recall(rememberedAt) : null;
    const perspective = perspectiveOf(options.token);
    if (options.enter && !options.store && remembered && perspective) {
      client.store = await IndexedDbStore.open(remembered, service, perspective);
    } else if (options.enter) {
      client.store = options.store;
    }
    if (options.world) {
      client.checker = new Promise((resolve, reject) => {
        client.checkerRefused = reject;
        client.checkerGiven = resolve;
      });
      client.checker.catch(() => {
      });
    }
    client.acceptStreams();
    const codecs = options.compression === false ? [] : [CODEC_ZSTD];
    await client.send(frame(1 /* Hello */, [PROTOCOL_VERSION, registryHash(options.registry), service, options.token, codecs]));
    const pipelined = options.enter && client.store ? client.enter(options.enter, true) : null;
    pipelined?.catch(() => {
    });
    const welcome = await client.control.next().catch((e) => e);
    const refused = welcome instanceof Error ? welcome : !welcome ? new ProtocolError("the server closed the control stream before Welcome") : welcome.type === 130 /* Error */ ? new ServerError(num(welcome.fields[0]), str(welcome.fields[1])) : welcome.type !== 129 /* Welcome */ ? new ProtocolError(`expected Welcome, got type ${welcome.type}`) : null;
    if (refused || !welcome || welcome instanceof Error) {
      const why = refused instanceof ServerError ? refused : await _HoardWebClient.closeReason(wt) ?? refused ?? new ProtocolError("no Welcome");
      client.fail(why);
      client.close();
      throw why;
    }
    client.worldBytes = bin(welcome.fields[1], 32);
    client.world = hex(client.worldBytes);
    client.perspective = str(welcome.fields[2]);
    client.zones = welcome.fields[3].map(str);
    client.tickHz = welcome.fields.length > 4 ? num(welcome.fields[4]) : 0;
    if (options.world) {
      try {
        if (client.world !== options.world.toLowerCase()) {
          throw new ProofError(`the server speaks for world ${client.world}, not ${options.world}`);
        }
        const key = welcome.fields.length > 5 ? bin(welcome.fields[5]) : new Uint8Array();
        client.checkerGiven?.(ProofChecker.of(bin(welcome.fields[1], 32), service, key));
      } catch (e) {
        client.fail(e);
        client.close();
        throw e;
      }
    }
    _HoardWebClient.remember(rememberedAt, client.world);
    const guessed = client.store !== void 0 && (options.store !== void 0 || client.world === remembered && client.perspective === perspective);
    if (!guessed) client.store = options.store ?? await IndexedDbStore.open(client.world, service, client.perspective);
    client.readControl();
    wt.closed.then(
      (info) => client.fail(new ServerError(info.closeCode ?? 0, info.reason || "connection closed")),
      (e) => client.fail(e instanceof Error ? e : new Error(String(e)))
    );
    if (options.enter) {
      client.firstEntry = pipelined && guessed ? pipelined : (
        // Another world (or player) than the copies named: enter again,
        // this time from the right cache (after the first answer, which
        // went to the copies of the world remembered).
        (pipelined ?? Promise.resolve(null)).catch(() => null).then(() => {
          client.live.delete(options.enter);
          client.inFlight.delete(options.enter);
          return client.enter(options.enter, true);
        })
      );
      client.inFlight.set(options.enter, client.firstEntry);
    }
    return client;
  }
  /** The code and reason the server closed `wt` with, if it closes within 5 s. */
  static async closeReason(wt) {
    let timer;
    const late = new Promise((resolve) => timer = setTimeout(() => resolve(null), 5e3));
    const closed = wt.closed.then(
      (info) => info.reason ? new ServerError(info.closeCode ?? 0, info.reason) : null,
      () => null
    );
    const reason = await Promise.race([closed, late]);
    clearTimeout(timer);
    return reason;
  }
  /** The entry `ConnectOptions.enter` asked for. */
  firstEntry = null;
  checkerGiven = null;
  static recall(key) {
    try {
      return globalThis.localStorage?.getItem(key) ?? null;
    } catch {
      return null;
    }
  }
  static remember(key, world) {
    try {
      globalThis.localStorage?.setItem(key, world);
    } catch {
    }
  }
  /** Calls `listener` with a zone's copies on entry and after each change. */
  onZone(listener) {
    this.zoneListeners.push(listener);
  }
  /** Calls `listener` with a zone's transient state whenever it changes. */
  onTransient(listener) {
    this.transientListeners.push(listener);
  }
  /** Calls `listener` with each of the game's messages. */
  onMessage(listener) {
    this.messageListeners.push(listener);
  }
  /** The copies of an entered zone. */
  shards(zone) {
    return this.live.get(zone);
  }
  /** A zone's last transient state, if the client is in it and has one. */
  transientOf(zone) {
    return this.transient.get(zone);
  }
  /**
   * False once the store refused a copy (the browser's quota full even
   * after evicting the world's other zones): from then on the client keeps
   * copies in memory only, and a later visit fetches what was not kept.
   */
  persistent = true;
  /** Live copies repaired since connecting (a delta that did not follow its copy). */
  liveRepairs = 0;
  /** Whether the session has ended (and why). */
  get closed() {
    return this.closedReason;
  }
  /**
   * Enters `zone` in one round trip and follows it: cached copies named by
   * hwm, each answer checked; copies that fail are fetched whole by a
   * second entry. Entering a zone already entered costs no message.
   */
  async enterZone(zone) {
    const flying = this.inFlight.get(zone);
    if (flying) return flying;
    const live = this.live.get(zone);
    if (live) return this.summary(zone, live);
    return this.enter(zone, true);
  }
  /**
   * Fetches `zone` into the cache without following it (the zone a player
   * walks towards): entering it later is all `Fresh`, or a few changes.
   */
  async prefetch(zone) {
    return this.enter(zone, false);
  }
  /** Stops following `zone` and forgets its transient state; its copies stay cached. */
  async leaveZone(zone) {
    this.live.delete(zone);
    this.heldDeltas.delete(zone);
    this.again.delete(zone);
    this.transient.forget(zone);
    await this.send(frame(3 /* LeaveZone */, [zone]));
  }
  /** Sends an intent (its payload already MessagePack); returns its seq. */
  async sendIntent(kind, payload) {
    return (await this.submit(kind, payload)).seq;
  }
  /**
   * Sends a typed intent (`value` encoded as rmp-serde reads it, see
   * `encodeValue`) and resolves once the server has processed it durably
   * (`Processed`); rejects with a `ServerError` carrying the game's code
   * when refused, or when the session ends first.
   */
  async act(kind, value) {
    return (await this.submit(kind, encodeValue(value))).outcome;
  }
  /** Ends the session (idempotent). */
  close() {
    try {
      this.wt.close();
    } catch {
    }
  }
  async submit(kind, payload) {
    if (this.intents.size >= MAX_PENDING_INTENTS) {
      throw new Error(`${MAX_PENDING_INTENTS} intents await their outcome already; wait for some`);
    }
    const seq = this.nextSeq++;
    const outcome = new Promise((resolve, reject) => this.intents.set(seq, { resolve, reject }));
    outcome.catch(() => {
    });
    if (!this.signer) {
      await this.send(frame(5 /* Intent */, [seq, kind, payload]));
      return { seq, outcome };
    }
    const signer = this.signer;
    const sent = this.signedSends.then(async () => {
      const nonce = await this.intentNonce();
      const statement = intentStatement(this.worldBytes, nonce, this.perspective, seq, kind, payload);
      const signature = await signStatement(signer.key, statement);
      await this.send(frame(5 /* Intent */, [seq, kind, payload, signature]));
    });
    this.signedSends = sent.catch(() => {
    });
    await sent;
    return { seq, outcome };
  }
  /** The nonce this session's intents are signed under, once the server gave it (10 s at most). */
  intentNonce() {
    if (this.nonce) return Promise.resolve(this.nonce);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("the server gave no nonce to sign intents under (does it take world tokens binding a key?)")),
        1e4
      );
      this.nonceWaiters.push((nonce) => {
        clearTimeout(timer);
        resolve(nonce);
      });
    });
  }
  /** The server's `IntentNonce`: intents are signed under it from now on. */
  takeNonce(nonce) {
    if (nonce.length !== 16) throw new ProtocolError("an IntentNonce is 16 bytes");
    this.nonce = nonce;
    for (const waiter of this.nonceWaiters.splice(0)) waiter(nonce);
  }
  /** Enters `zone` (following it with `subscribe`); one entry of a zone at a time is followed. */
  enter(zone, subscribe) {
    if (!subscribe) return this.enterNow(zone, false);
    const entry = this.enterNow(zone, true).finally(() => {
      if (this.inFlight.get(zone) === entry) this.inFlight.delete(zone);
    });
    this.inFlight.set(zone, entry);
    return entry;
  }
  async enterNow(zone, subscribe) {
    const started = performance.now();
    if (subscribe) this.heldDeltas.set(zone, this.heldDeltas.get(zone) ?? []);
    try {
      const first = await this.enterOnce(zone, subscribe, await this.copiesOf(zone));
      const stats = first.stats;
      if (first.failed.length > 0 || first.unconfirmed.length > 0) await this.repairEntry(zone, subscribe, first, stats);
      stats.ms = Math.round(performance.now() - started);
      if (!subscribe) {
        stats.objects = [...first.copies.values()].reduce((n, c) => n + c.objects.length, 0);
        return stats;
      }
      await this.replayHeld(zone);
      const live = this.live.get(zone);
      stats.objects = [...live.values()].reduce((n, c) => n + c.objects.length, 0);
      this.zoneListeners.forEach((l) => l(zone, live));
      return stats;
    } finally {
      if (subscribe) this.heldDeltas.delete(zone);
      if (subscribe && this.again.delete(zone) && !this.closedReason) {
        this.enter(zone, true).catch((e) => this.fail(e));
      }
    }
  }
  /**
   * Repairs what an entry's answer did not verify (one more round trip):
   * each failed copy; then the copies a mismatched `Fresh` selected are
   * confirmed by its root over the repaired heads and theirs, or repaired
   * too. A repair that does not verify either is fatal.
   */
  async repairEntry(zone, subscribe, first, stats) {
    const fixed = /* @__PURE__ */ new Map();
    const mend = async (shard) => {
      const { copy, bytes, sent } = await this.repair(zone, shard, first.copies.get(shard));
      fixed.set(shard, copy);
      stats.repaired++;
      stats.bytes_rx += bytes;
      stats.bytes_tx += sent;
    };
    await Promise.all([...new Set(first.failed)].map(mend));
    const confirmed = [];
    for (const { selected, root } of first.unconfirmed) {
      const others = selected.filter((c) => !fixed.has(c.shard));
      if (equalBytes(freshRoot(selected.map((c) => fixed.get(c.shard) ?? c)), root)) confirmed.push(...others);
      else await Promise.all(others.map((c) => mend(c.shard)));
    }
    stats.fresh += confirmed.length;
    const into = subscribe ? this.live.get(zone) : first.copies;
    for (const c of confirmed) into.set(c.shard, c);
    fixed.forEach((copy, shard) => into.set(shard, copy));
    await Promise.all([...fixed.values()].map((c) => this.save(zone, c)));
  }
  /** Sends a `Repair` of `shard` listing `copy`'s objects; resolves with the rebuilt, verified copy. */
  async repair(zone, shard, copy) {
    const request2 = this.nextRequest++;
    const message = frame(4 /* Repair */, [request2, zone, shard, copy?.seq ?? 0n, repairList(copy)]);
    const done = new Promise(
      (resolve, reject) => this.repairs.set(request2, { zone, copy, resolve, reject })
    );
    await this.send(message);
    return { ...await done, sent: message.length };
  }
  /** The copies to name for `zone`: those kept live, else the store's that verify. */
  async copiesOf(zone) {
    const live = this.live.get(zone);
    return live ? new Map(live) : await this.store.load(zone);
  }
  summary(zone, live) {
    const objects = [...live.values()].reduce((n, c) => n + c.objects.length, 0);
    return { zone, shards: live.size, fresh: live.size, delta: 0, snapshot: 0, repaired: 0, objects, bytes_rx: 0, bytes_tx: 0, ms: 0 };
  }
  async enterOnce(zone, subscribe, copies) {
    const request2 = this.nextRequest++;
    const held = [...copies.values()].sort((a, b) => a.shard < b.shard ? -1 : 1);
    const top = held.reduce((m, c) => c.seq > m ? c.seq : m, 0n);
    const proofs = this.checker !== null;
    const message = frame(2 /* EnterZone */, [
      request2,
      zone,
      subscribe,
      proofs ? held.map((c) => [c.shard, c.epoch, c.seq, c.digest]) : [],
      proofs ? [[], [0]] : [encodeIdList(held.map((c) => c.shard)), [top, ...held.map((c) => top - c.seq)]],
      proofs
    ]);
    const answered = new Promise((resolve, reject) => this.entries.set(request2, { resolve, reject }));
    const entry = { zone, subscribe, copies, held, failed: [], unconfirmed: [] };
    this.entering.set(request2, entry);
    await this.send(message);
    const stats = await answered;
    stats.bytes_tx = message.length;
    return { stats, failed: entry.failed, unconfirmed: entry.unconfirmed, copies };
  }
  async send(bytes) {
    if (this.closedReason) throw this.closedReason;
    await this.writer.write(bytes);
  }
  fail(e) {
    if (this.closedReason) return;
    this.closedReason = e;
    for (const entry of this.entries.values()) entry.reject(e);
    this.entries.clear();
    for (const intent of this.intents.values()) intent.reject(e);
    this.intents.clear();
    for (const repair of this.repairs.values()) repair.reject(e);
    this.repairs.clear();
    this.checkerRefused?.(e);
  }
  async readControl() {
    try {
      for (let f = await this.control.next(); f; f = await this.control.next()) {
        const x = f.fields;
        if (f.type === 130 /* Error */) {
          this.fail(new ServerError(num(x[0]), str(x[1])));
          this.close();
          return;
        }
        if (f.type === 131 /* ZoneDenied */ || f.type === 133 /* ZoneElsewhere */) {
          const request2 = num(x[0]);
          const error = f.type === 131 /* ZoneDenied */ ? new ServerError(num(x[2]), str(x[3])) : new ZoneElsewhere(str(x[1]), str(x[2]));
          this.entering.delete(request2);
          this.entries.get(request2)?.reject(error);
          this.entries.delete(request2);
        }
        if (f.type === 132 /* IntentRejected */) {
          const seq = num(x[0]);
          this.intents.get(seq)?.reject(new ServerError(num(x[1]), str(x[2])));
          this.intents.delete(seq);
        }
        if (f.type === 134 /* IntentNonce */) this.takeNonce(bin(x[0], 16));
      }
    } catch (e) {
      this.fail(e);
    }
  }
  async acceptStreams() {
    const streams = this.wt.incomingUnidirectionalStreams.getReader();
    for (; ; ) {
      const { value, done } = await streams.read().catch(() => ({ value: void 0, done: true }));
      if (done || !value) return;
      const packed = this.options.compression !== false;
      this.readStream(new FrameReader(value, MAX_BULK_FRAME, packed)).catch((e) => {
        this.fail(e);
        this.close();
      });
    }
  }
  async readStream(reader) {
    const first = await readWhole(reader);
    if (!first) return;
    if (first.type === 144 /* AnswerBegin */ && this.repairs.has(num(first.fields[0]))) return this.readRepair(reader, first);
    if (first.type === 144 /* AnswerBegin */) return this.readAnswer(reader, first);
    for (let f = first; f; f = await readWhole(reader)) await this.onPushed(f);
  }
  async readAnswer(reader, begin) {
    const request2 = num(begin.fields[0]);
    const entry = this.entering.get(request2);
    const stats = {
      zone: str(begin.fields[1]),
      shards: num(begin.fields[2]),
      fresh: 0,
      delta: 0,
      snapshot: 0,
      repaired: 0,
      objects: 0,
      bytes_rx: begin.bytes,
      bytes_tx: 0,
      ms: 0
    };
    if (!entry) return reader.cancel();
    const next = /* @__PURE__ */ new Map();
    const checker = this.checker ? await this.checker : null;
    const proven = new PendingProofs("shards");
    const keep = (copy) => {
      if (checker) {
        const proof = proven.take(copy.shard);
        if (!proof) throw new ProofError(`shard ${copy.shard} came without the world's signed head`);
        checker.checkCopy(proof, copy);
      }
      next.set(copy.shard, copy);
    };
    for (let f = await readWhole(reader); f; f = await readWhole(reader)) {
      stats.bytes_rx += f.bytes;
      const x = f.fields;
      if (f.type === 153 /* HeadProof */) {
        if (checker) await proven.hold(checker, f, entry.copies.get(big(f.fields[0])));
        continue;
      }
      if (f.type === 149 /* AnswerEnd */) {
        this.entering.delete(request2);
        const changed = [...next.values()].filter((c) => entry.copies.get(c.shard) !== c);
        if (entry.subscribe) {
          const live = this.live.get(entry.zone) ?? /* @__PURE__ */ new Map();
          next.forEach((copy, shard) => live.set(shard, copy));
          this.live.set(entry.zone, live);
        } else {
          next.forEach((copy, shard) => entry.copies.set(shard, copy));
        }
        await Promise.all(changed.map((c) => this.save(entry.zone, c)));
        this.entries.get(request2)?.resolve(stats);
        this.entries.delete(request2);
        return;
      }
      if (f.type === 148 /* Snapshot */) {
        const copy = { shard: big(x[0]), epoch: big(x[1]), seq: big(x[2]), digest: bin(x[3], 40), objects: objectList(x[5]) };
        if (!equalBytes(digestOf(copy.objects), copy.digest)) throw new ProtocolError(`shard ${copy.shard}: snapshot digest mismatch`);
        keep(copy);
        stats.snapshot++;
      } else if (f.type === 146 /* Changes */ || f.type === 147 /* Manifest */) {
        const shard = big(x[0]);
        const base = entry.copies.get(shard);
        const applied = base && base.epoch === big(x[1]) && base.seq === big(x[2]) ? applyMessage(base, f) : null;
        if (applied) {
          keep(applied);
          stats.delta++;
        } else {
          proven.take(shard);
          entry.failed.push(shard);
        }
      } else if (f.type === 145 /* UpToDate */) {
        const shard = big(x[0]);
        const copy = entry.copies.get(shard);
        if (!copy || copy.seq !== big(x[1])) throw new ProtocolError(`shard ${shard}: UpToDate for a copy not named at that seq`);
        keep(copy);
        stats.fresh++;
      } else if (f.type === 152 /* Fresh */) {
        if (checker) throw new ProofError("Fresh came for an entry that asked for signed heads (a Fresh carries none)");
        const mask = bin(x[0]);
        const selected = entry.held.filter((_, i) => mask[i >> 3] >> (i & 7) & 1);
        const root = freshRoot(selected);
        if (equalBytes(root, bin(x[2], 32))) {
          selected.forEach((c) => next.set(c.shard, c));
          stats.fresh += selected.length;
        } else {
          const tags = bin(x[1]);
          const wrong = selected.filter((c, i) => tag(c) !== tags[i]);
          (wrong.length ? wrong : selected).forEach((c) => entry.failed.push(c.shard));
          entry.unconfirmed.push({ selected, root: bin(x[2], 32) });
        }
      } else {
        throw new ProtocolError(`unexpected message type ${f.type} in an answer`);
      }
    }
    throw new ProtocolError("an answer stream ended before AnswerEnd");
  }
  /** A repair's answer: (a signed head,) the shard's `Manifest`, `AnswerEnd`. */
  async readRepair(reader, begin) {
    const request2 = num(begin.fields[0]);
    const pending = this.repairs.get(request2);
    const checker = this.checker ? await this.checker : null;
    let proof;
    let repaired;
    let bytes = begin.bytes;
    for (let f = await readWhole(reader); f; f = await readWhole(reader)) {
      bytes += f.bytes;
      if (f.type === 153 /* HeadProof */) {
        if (!checker) continue;
        proof = headProof(f);
        await checker.check(proof, pending.copy);
      } else if (f.type === 149 /* AnswerEnd */) {
        if (!repaired) throw new ProtocolError(`repair ${request2} ended without its shard`);
        this.repairs.delete(request2);
        return pending.resolve({ copy: repaired, bytes });
      } else {
        repaired = rebuild(pending.copy, f);
        if (checker) {
          if (!proof || proof.shard !== repaired.shard) throw new ProofError(`shard ${repaired.shard}'s repair came without the world's signed head`);
          checker.checkCopy(proof, repaired);
        }
      }
    }
    throw new ProtocolError("a repair's answer stream ended before AnswerEnd");
  }
  /** A message on the delta stream. */
  async onPushed(f) {
    const x = f.fields;
    switch (f.type) {
      case 153 /* HeadProof */: {
        if (this.checker) await this.deltaProofs.hold(await this.checker, f);
        return;
      }
      case 160 /* Delta */: {
        const zone = str(x[0]);
        const shard = big(x[1]);
        const pushed = { frame: f, proof: this.deltaProofs.take(shard) };
        const held = this.heldDeltas.get(zone);
        if (held) {
          if (held.length < MAX_HELD_DELTAS) held.push(pushed);
          else this.again.add(zone);
          return;
        }
        const mending = this.mending.get(`${zone} ${shard}`);
        if (mending) {
          if (mending.length < MAX_HELD_DELTAS) mending.push(pushed);
          return;
        }
        if (this.live.has(zone) && await this.applyDelta(zone, pushed)) {
          this.zoneListeners.forEach((l) => l(zone, this.live.get(zone)));
        }
        return;
      }
      case 161 /* Transient */:
      case 164 /* TransientPatch */: {
        const zone = str(x[0]);
        if (!this.live.has(zone) && !this.heldDeltas.has(zone)) return;
        let payload;
        if (f.type === 161 /* Transient */) {
          payload = bin(x[1]);
          this.transient.replace(zone, payload);
        } else {
          payload = this.transient.patch(zone, x[1], x[2]);
        }
        if (payload) this.transientListeners.forEach((l) => l(zone, payload));
        return;
      }
      case 132 /* IntentRejected */: {
        const seq = num(x[0]);
        this.intents.get(seq)?.reject(new ServerError(num(x[1]), str(x[2])));
        this.intents.delete(seq);
        return;
      }
      case 163 /* Processed */:
        for (const seq of x[0]) {
          this.intents.get(num(seq))?.resolve();
          this.intents.delete(num(seq));
        }
        return;
      case 162 /* Status */:
        this.status = { writable: x[0] === true, message: str(x[1]) };
        return;
      case 134 /* IntentNonce */:
        this.takeNonce(bin(x[0], 16));
        return;
      case 165 /* GameMessage */: {
        const zone = x[1] === null || x[1] === void 0 ? null : str(x[1]);
        const payload = bin(x[2]);
        this.messageListeners.forEach((l) => l(str(x[0]), zone, payload));
        return;
      }
      default:
        throw new ProtocolError(`unexpected message type ${f.type} on the delta stream`);
    }
  }
  /** The deltas held while `zone` was being entered, in order, on the copies the entry left. */
  async replayHeld(zone) {
    for (const pushed of this.heldDeltas.get(zone) ?? []) await this.applyDelta(zone, pushed);
    this.heldDeltas.set(zone, []);
  }
  /**
   * Applies a `Delta` to the zone's live copy; `false` when already
   * included. One that does not follow the copy, or whose digest differs,
   * or that came without the signed head the client asked for (the origin
   * had moved on when it signed), drops that copy and enters the zone again
   * (the shard comes whole, signed). A result that is not the signed head
   * is a `ProofError`.
   */
  async applyDelta(zone, { frame: f, proof }) {
    const shards = this.live.get(zone);
    const shard = big(f.fields[1]);
    const copy = shards.get(shard);
    if (!copy) return false;
    if (big(f.fields[4]) <= copy.seq) return false;
    const follows = copy.epoch === big(f.fields[2]) && copy.seq === big(f.fields[3]);
    const unsigned = this.checker !== null && proof === void 0;
    const applied = follows && !unsigned ? applyMessage(copy, { ...f, fields: f.fields.slice(1) }) : null;
    if (!applied) {
      const why = unsigned ? "a delta without its signed head" : "a delta that does not follow the copy";
      console.warn(`hoard: zone ${zone} shard ${shard}: ${why}; repairing it`);
      this.mendLive(zone, copy);
      return false;
    }
    if (proof) (await this.checker).checkCopy(proof, applied);
    shards.set(shard, applied);
    await this.save(zone, applied);
    return true;
  }
  /**
   * Repairs a live copy a delta did not follow; the deltas that come
   * meanwhile are held (bounded; past it, the next one that does not
   * follow repairs again) and applied after.
   */
  mendLive(zone, copy) {
    const key = `${zone} ${copy.shard}`;
    if (this.mending.has(key)) {
      this.mendAgain.add(key);
      return;
    }
    this.mending.set(key, []);
    this.repair(zone, copy.shard, copy).then(async ({ copy: repaired }) => {
      const shards = this.live.get(zone);
      if (!shards) return;
      shards.set(copy.shard, repaired);
      this.liveRepairs++;
      await this.save(zone, repaired);
      for (const pushed of this.mending.get(key) ?? []) await this.applyDelta(zone, pushed);
      this.zoneListeners.forEach((l) => l(zone, shards));
    }).catch((e) => this.fail(e)).finally(() => {
      this.mending.delete(key);
      const now = this.live.get(zone)?.get(copy.shard);
      if (this.mendAgain.delete(key) && now && !this.closedReason) this.mendLive(zone, now);
    });
  }
  async save(zone, copy) {
    try {
      await this.store.save(zone, copy);
    } catch (e) {
      console.warn("hoard: could not cache a shard; going on uncached", e);
      this.store = new MemoryStore();
      this.persistent = false;
    }
  }
};
export {
  CODEC_ZSTD,
  FrameDecoder,
  HoardWebClient,
  IndexedDbStore,
  MAX_HELD_DELTAS,
  MAX_PACKED_RATIO,
  MAX_PACKED_SIZE,
  MAX_PATCH_OPS,
  MAX_PENDING_INTENTS,
  MAX_PENDING_PROOFS,
  MAX_REPAIR_OBJECTS,
  MAX_SIGNATURE_BYTES,
  MAX_TRANSIENT,
  MemoryStore,
  ProofChecker,
  ProofError,
  ProtocolError,
  ServerError,
  TransientState,
  Type,
  ZoneElsewhere,
  applyPatch,
  base64url,
  components,
  decodeCopy,
  decodeValue,
  digestOf,
  encodeCopy,
  encodeValue,
  frame,
  freshRoot,
  fromBase64url,
  hex,
  importPlayerKey,
  intentStatement,
  rebuild,
  registryHash,
  repairList,
  setRoot,
  signStatement,
  signedStatement,
  unpack,
  worldTokenClaims
};
