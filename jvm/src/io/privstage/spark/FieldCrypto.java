package io.privstage.spark;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.Arrays;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * privstage field ciphertext, format version 1 (AES-256-GCM, one value per ciphertext).
 *
 * <pre>
 * ciphertext = 0x01 || u32be(key_version) || nonce[12] || GCM(dek, nonce, aad, plaintext) (body || tag[16])
 * plaintext  = 0x00                          (a null value)
 *            | 0x01 || UTF-8(text)           (a value, as Spark's cast to string prints it)
 * aad        = ciphertext[0:5] || lp(dataset) || lp(column) || lp(row_key)
 * lp(s)      = u32be(len(UTF-8(s))) || UTF-8(s)
 * </pre>
 *
 * <p>The nonce is random (a DRBG per task); keys are used for at most one dataset write, far below
 * GCM's 2^32 random-nonce limit. A Cipher and key spec are cached per instance (Spark deserializes a
 * UDF per task) and reused for every row. Failures throw with a marker the Python side translates:
 * {@code PRIVSTAGE_INTEGRITY[...]} and {@code PRIVSTAGE_KEY_UNAVAILABLE[...]}; never NULL, never garbage.
 */
final class FieldCrypto {
  static final byte FORMAT = 1;
  static final int HEADER = 5;
  static final int NONCE = 12;
  static final int TAG = 16;
  static final int OVERHEAD = HEADER + NONCE + TAG + 1;

  private final Cipher cipher;
  private byte[] cachedKey;
  private SecretKeySpec keySpec;
  private SecureRandom random;

  FieldCrypto() {
    try {
      cipher = Cipher.getInstance("AES/GCM/NoPadding");
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("AES/GCM/NoPadding is not available", e);
    }
  }

  private SecretKeySpec key(byte[] dek) {
    if (keySpec == null || !Arrays.equals(dek, cachedKey)) {
      if (dek.length != 32) {
        throw new IllegalArgumentException("privstage field encryption needs 256-bit data keys");
      }
      keySpec = new SecretKeySpec(dek, "AES");
      cachedKey = dek.clone();
    }
    return keySpec;
  }

  static byte[] aad(byte[] header, String dataset, String column, String rowKey) {
    byte[] d = dataset.getBytes(StandardCharsets.UTF_8);
    byte[] c = column.getBytes(StandardCharsets.UTF_8);
    byte[] r = rowKey.getBytes(StandardCharsets.UTF_8);
    ByteBuffer buf = ByteBuffer.allocate(HEADER + 12 + d.length + c.length + r.length);
    buf.put(header, 0, HEADER).putInt(d.length).put(d).putInt(c.length).put(c).putInt(r.length).put(r);
    return buf.array();
  }

  static String describe(String dataset, String column, String rowKey, String reason) {
    return "dataset=" + dataset + "|column=" + column + "|row_key=" + rowKey + "|reason=" + reason;
  }

  byte[] encrypt(String value, byte[] dek, int keyVersion, String dataset, String column, String rowKey)
      throws GeneralSecurityException {
    if (dek == null) {
      throw new IllegalStateException(
          "PRIVSTAGE_KEY_UNAVAILABLE[" + describe(dataset, column, rowKey, "no data key for this row") + "]");
    }
    if (rowKey == null) {
      throw new IllegalStateException(
          "PRIVSTAGE_INTEGRITY[" + describe(dataset, column, "null", "the row key is null") + "]");
    }
    if (random == null) {
      try {
        random = SecureRandom.getInstance("DRBG");
      } catch (NoSuchAlgorithmException e) {
        random = new SecureRandom();
      }
    }
    byte[] text = value == null ? new byte[0] : value.getBytes(StandardCharsets.UTF_8);
    byte[] out = new byte[OVERHEAD + text.length];
    out[0] = FORMAT;
    ByteBuffer.wrap(out, 1, 4).putInt(keyVersion);
    byte[] nonce = new byte[NONCE];
    random.nextBytes(nonce);
    System.arraycopy(nonce, 0, out, HEADER, NONCE);
    byte[] plain = new byte[1 + text.length];
    plain[0] = (byte) (value == null ? 0 : 1);
    System.arraycopy(text, 0, plain, 1, text.length);
    cipher.init(Cipher.ENCRYPT_MODE, key(dek), new GCMParameterSpec(TAG * 8, nonce));
    cipher.updateAAD(aad(out, dataset, column, rowKey));
    cipher.doFinal(plain, 0, plain.length, out, HEADER + NONCE);
    return out;
  }

  /** The value, or null for an authenticated null; throws for anything that does not authenticate. */
  String decrypt(byte[] data, byte[] dek, int keyVersion, String dataset, String column, String rowKey) {
    String where = rowKey == null ? "null" : rowKey;
    if (data == null) {
      throw integrity(dataset, column, where, "the ciphertext is missing (null)");
    }
    if (data.length < OVERHEAD || data[0] != FORMAT) {
      throw integrity(dataset, column, where, "not a privstage field ciphertext (length or header)");
    }
    int version = ByteBuffer.wrap(data, 1, 4).getInt();
    if (dek == null) {
      throw new IllegalStateException(
          "PRIVSTAGE_KEY_UNAVAILABLE[" + describe(dataset, column, where, "no data key for this row") + "]");
    }
    if (version != keyVersion) {
      throw integrity(dataset, column, where, "key version " + version + " in the ciphertext, expected " + keyVersion);
    }
    if (rowKey == null) {
      throw integrity(dataset, column, where, "the row key is null");
    }
    byte[] plain;
    try {
      cipher.init(
          Cipher.DECRYPT_MODE, key(dek), new GCMParameterSpec(TAG * 8, data, HEADER, NONCE));
      cipher.updateAAD(aad(data, dataset, column, rowKey));
      plain = cipher.doFinal(data, HEADER + NONCE, data.length - HEADER - NONCE);
    } catch (GeneralSecurityException e) {
      throw integrity(dataset, column, where, "authentication failed (tampered, swapped or wrong key)");
    }
    if (plain.length == 0 || plain[0] > 1 || (plain[0] == 0 && plain.length != 1)) {
      throw integrity(dataset, column, where, "malformed plaintext encoding");
    }
    if (plain[0] == 0) {
      return null;
    }
    return new String(plain, 1, plain.length - 1, StandardCharsets.UTF_8);
  }

  private static IllegalStateException integrity(String dataset, String column, String rowKey, String reason) {
    return new IllegalStateException("PRIVSTAGE_INTEGRITY[" + describe(dataset, column, rowKey, reason) + "]");
  }
}
