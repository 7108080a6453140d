package io.privstage.spark;

import java.security.GeneralSecurityException;
import org.apache.spark.sql.api.java.UDF6;

/**
 * privstage_field_encrypt_v1(value STRING, dek BINARY, key_version INT, dataset STRING, column STRING,
 * row_key STRING) -> BINARY. Format: see {@link FieldCrypto}. The data key comes from a broadcast relation
 * column, never a literal.
 */
public final class FieldEncrypt implements UDF6<String, byte[], Integer, String, String, String, byte[]> {
  private static final long serialVersionUID = 1L;
  private transient FieldCrypto crypto;

  @Override
  public byte[] call(String value, byte[] dek, Integer keyVersion, String dataset, String column, String rowKey)
      throws GeneralSecurityException {
    if (crypto == null) {
      crypto = new FieldCrypto();
    }
    return crypto.encrypt(value, dek, keyVersion, dataset, column, rowKey);
  }
}
