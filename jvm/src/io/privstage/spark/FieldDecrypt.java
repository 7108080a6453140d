package io.privstage.spark;

import org.apache.spark.sql.api.java.UDF6;

/**
 * privstage_field_decrypt_v1(ciphertext BINARY, dek BINARY, key_version INT, dataset STRING, column STRING,
 * row_key STRING) -> STRING. Throws (never returns NULL for a bad value) when the ciphertext does not
 * authenticate under (dataset, column, row_key); returns NULL only for an authenticated null.
 */
public final class FieldDecrypt implements UDF6<byte[], byte[], Integer, String, String, String, String> {
  private static final long serialVersionUID = 1L;
  private transient FieldCrypto crypto;

  @Override
  public String call(byte[] data, byte[] dek, Integer keyVersion, String dataset, String column, String rowKey) {
    if (crypto == null) {
      crypto = new FieldCrypto();
    }
    return crypto.decrypt(data, dek, keyVersion, dataset, column, rowKey);
  }
}
